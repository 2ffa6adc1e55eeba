// Stories (docs/api/stories.md): the tray at the top of the home feed, the full-screen
// viewer, and posting a story (#/stories/new). The tray follows live.js's `story` wake-ups
// (and every reconnection) by reading GET /stories/tray again: MQTT is only a wake-up.
//
// The viewer shows one story at a time with a bar per story of the reel: a photo stays
// PHOTO_SHOWN_MS, a video plays to its end. Left and right halves (or the arrow keys) go
// back and on, holding the story (or Space) pauses it, Escape closes. Each story is marked
// seen (POST /stories/<id>/seen) when it is shown. The author sees the view count and the
// viewers of each of their stories; others reply when the story allows it (a DM).

import { api, session } from "../api.js";
import { errorText, field, h, say, timeAgo } from "../dom.js";
import { events } from "../live.js";
import { avatar, photo } from "../media.js";
import { screenSignal, send } from "./messages.js";
import { tusUpload, waitReady } from "./upload.js";

const PHOTO_SHOWN_MS = 5000;
// A video that cannot play (or reports no end) moves on after its length plus this.
const VIDEO_SLACK_MS = 1500;
const VIDEO_FALLBACK_MS = 15_000;
const TICK_MS = 50;
// A press longer than this is a hold (pause), not a tap (next or previous).
const HOLD_MS = 250;
const VIEWERS_PAGE = 50;

// Accounts by id. The tray, the viewer list and the close-friends list carry each account's
// compact document (username, full_name, profile_pic_url, ...), remembered here; only an id
// seen without one is fetched (GET /users/<id>).
const users = new Map();
export function userOf(id) {
  if (!users.has(id)) users.set(id, api("GET", `/users/${id}`).catch(() => ({ user_id: id, username: "someone" })));
  return users.get(id);
}

// The account of an entry that carries its document (kept for userOf), or a stand-in for
// one without (an account gone, or on the other side of a block).
function accountOf(entry) {
  if (!entry.username) return { user_id: entry.user_id, username: "someone", profile_pic_url: null };
  const user = { user_id: entry.user_id, username: entry.username, full_name: entry.full_name, profile_pic_url: entry.profile_pic_url ?? null, is_verified: entry.is_verified, is_private: entry.is_private };
  users.set(user.user_id, Promise.resolve(user));
  return user;
}

// ---- the tray -------------------------------------------------------------------------

// A ring is named "ava: new story" (or ": seen"): its visible text, "ava", and the state. The
// picture says nothing more: the author's profile picture, or a letter drawn by CSS when
// there is none (or it fails to load).
function ringContent(user, label) {
  const letter = () => h("span", { class: "avatar blank", dataset: { letter: (user.username || "?")[0].toUpperCase() } });
  const picture = user.profile_pic_url
    ? h("img", { class: "avatar", src: user.profile_pic_url, alt: "", width: 56, height: 56 })
    : letter();
  if (user.profile_pic_url) picture.addEventListener("error", () => picture.replaceWith(letter()), { once: true });
  return [h("span", { class: "story-avatar", "aria-hidden": "true" }, picture), h("span", { class: "story-name" }, label)];
}

function ring(author, label, onclick) {
  const state = author.has_unseen ? "unseen" : "seen";
  return h("li", {},
    h("button", { type: "button", class: `story-ring ${state}`, "aria-label": `${label}: ${state === "unseen" ? "new story" : "seen"}`, dataset: { userId: author.user_id, state }, onclick },
      ringContent(author, label)));
}

export function storiesTray() {
  const me = session.user;
  const list = h("ul", { class: "tray", "aria-label": "Stories" });
  const section = h("section", { class: "tray-card card", "aria-label": "Stories" }, list);
  const signal = screenSignal();
  let loading = null;
  const load = async () => {
    if (loading) return loading;
    loading = (async () => {
      try {
        const doc = await api("GET", "/stories/tray");
        for (const a of doc.authors) accountOf(a);
        const own = doc.authors.find((a) => a.user_id === me.user_id);
        const others = doc.authors.filter((a) => a.user_id !== me.user_id);
        const reels = doc.authors.map((a) => ({ user: a, stories: null }));
        const open = (author) => () => openViewer(reels, reels.findIndex((r) => r.user.user_id === author.user_id), { onClose: load });
        const add = h("a", { href: "#/stories/new", class: "story-add", "aria-label": "Add to your story" }, "+");
        list.replaceChildren(
          h("li", { class: "own" },
            own
              ? h("button", { type: "button", class: `story-ring ${own.has_unseen ? "unseen" : "seen"}`, "aria-label": "Your story", onclick: open(own) }, ringContent(me, "Your story"))
              : h("a", { href: "#/stories/new", class: "story-ring none", "aria-label": "Your story: add one" }, ringContent(me, "Your story")),
            add),
          ...others.map((a) => ring(a, a.username, open(a))));
      } catch (err) {
        list.replaceChildren(h("li", { class: "error" }, errorText(err)));
      } finally {
        loading = null;
      }
    })();
    return loading;
  };
  for (const name of ["story", "connected"]) events.addEventListener(name, load, { signal });
  load();
  return section;
}

// ---- the viewer -----------------------------------------------------------------------

// `reels`: [{user: {user_id, username}, stories: [...] | null (fetched), title?}];
// `markSeen`: false for highlights (expired stories are not viewed again).
export function openViewer(reels, start, { onClose = () => {}, markSeen = true } = {}) {
  const me = session.user;
  let reelIndex = Math.max(0, start);
  let storyIndex = 0;
  let reel = null;
  let elapsed = 0;
  let duration = PHOTO_SHOWN_MS;
  let paused = false;
  let held = false;
  let video = null;
  let timer = null;
  let closed = false;
  const opener = document.activeElement;

  const bars = h("div", { class: "story-bars", "aria-hidden": "true" });
  const who = h("p", { class: "story-who" });
  const stage = h("div", { class: "story-stage" });
  const footer = h("div", { class: "story-footer" });
  const pauseButton = h("button", { type: "button", class: "story-pause", "aria-pressed": "false" }, "Pause");
  const closeButton = h("button", { type: "button", class: "story-close", "aria-label": "Close stories" }, "✕");
  const prev = h("button", { type: "button", class: "story-prev", "aria-label": "Previous story" });
  const next = h("button", { type: "button", class: "story-next", "aria-label": "Next story" });
  const counter = h("p", { class: "sr", "aria-live": "polite" });
  const dialog = h("div", { class: "story-viewer", role: "dialog", "aria-modal": "true", "aria-label": "Stories" },
    h("div", { class: "story-frame" },
      bars,
      h("div", { class: "story-head" }, who, pauseButton, closeButton),
      stage, prev, next, counter, footer));

  const setPaused = (value) => {
    paused = value;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Play" : "Pause";
    dialog.classList.toggle("paused", paused);
    if (video) (paused || held ? video.pause() : video.play().catch(() => {}));
  };
  const paint = () => {
    const bar = bars.children[storyIndex]?.firstChild;
    if (bar) bar.style.width = `${Math.min(100, (elapsed / duration) * 100)}%`;
  };
  const tick = () => {
    if (paused || held) return;
    if (video && Number.isFinite(video.duration) && video.duration > 0 && !video.error) {
      duration = video.duration * 1000;
      elapsed = video.currentTime * 1000;
      if (!video.ended) return paint();
    } else elapsed += TICK_MS;
    paint();
    if (elapsed >= duration) go(1);
  };

  async function loadReel() {
    const r = reels[reelIndex];
    if (!r.stories) {
      const doc = await api("GET", `/users/${r.user.user_id}/stories`);
      r.stories = doc.stories;
    }
    return r;
  }

  async function show() {
    if (closed) return;
    const story = reel.stories[storyIndex];
    elapsed = 0;
    video = null;
    bars.replaceChildren(...reel.stories.map((s, i) => {
      const fill = h("span", {});
      fill.style.width = i < storyIndex ? "100%" : "0%";
      return h("span", { class: "story-bar" }, fill);
    }));
    const mine = story.author_id === me.user_id;
    const name = reel.title || reel.user.username;
    who.replaceChildren(avatar(reel.user, 32), h("strong", {}, name), " ", h("time", { datetime: story.created_at }, timeAgo(story.created_at)));
    dialog.setAttribute("aria-label", reel.title ? `Highlight: ${reel.title}` : `${reel.user.username}'s stories`);
    counter.textContent = `Story ${storyIndex + 1} of ${reel.stories.length}`;
    const media = story.media;
    const alt = `Story by ${reel.user.username}`;
    if (!media) stage.replaceChildren(h("p", { class: "story-gone" }, "This story is no longer available."));
    else if (media.media_type === "video" && media.urls?.hls) {
      video = h("video", { src: media.urls.hls, autoplay: true, playsinline: true, muted: true, "aria-label": alt, poster: media.variants?.poster?.formats?.jpeg });
      stage.replaceChildren(video);
      duration = media.duration_s ? media.duration_s * 1000 + VIDEO_SLACK_MS : VIDEO_FALLBACK_MS;
    } else {
      stage.replaceChildren(photo(media, { alt, sizes: "(max-width: 640px) 100vw, 420px", eager: true }));
      duration = PHOTO_SHOWN_MS;
    }
    footer.replaceChildren();
    if (mine && markSeen) footer.append(viewersButton(story));
    else if (!mine && story.can_reply && markSeen) footer.append(replyForm(story, reel.user));
    if (markSeen && !mine && !story.seen) {
      story.seen = true;
      api("POST", `/stories/${story.story_id}/seen`).catch(() => {});
    }
    paint();
  }

  async function openReel(index, at) {
    reelIndex = index;
    try {
      reel = await loadReel();
    } catch (err) {
      say(errorText(err));
      return close();
    }
    if (!reel.stories.length) {
      if (index + 1 < reels.length) return openReel(index + 1, 0);
      return close();
    }
    storyIndex = at === "last" ? reel.stories.length - 1 : at === "unseen" ? Math.max(0, reel.stories.findIndex((s) => !s.seen)) : at;
    show();
  }

  function go(step) {
    if (!reel || closed) return;
    const target = storyIndex + step;
    if (target >= 0 && target < reel.stories.length) {
      storyIndex = target;
      return show();
    }
    const nextReel = reelIndex + (step > 0 ? 1 : -1);
    if (nextReel < 0) {
      storyIndex = 0;
      return show();
    }
    if (nextReel >= reels.length) return close();
    openReel(nextReel, step > 0 ? "unseen" : "last");
  }

  function close() {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    document.removeEventListener("keydown", onKey, true);
    window.removeEventListener("hashchange", close);
    dialog.remove();
    document.body.classList.remove("story-open");
    if (opener?.isConnected) opener.focus();
    onClose();
  }

  function onKey(event) {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) {
      if (event.key === "Escape") close();
      return;
    }
    if (event.key === "Escape") close();
    else if (event.key === "ArrowRight") go(1);
    else if (event.key === "ArrowLeft") go(-1);
    else if (event.key === " " && !(event.target instanceof HTMLButtonElement)) setPaused(!paused);
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  // A tap on a half goes back or on; holding it pauses until released.
  for (const [button, step] of [[prev, -1], [next, 1]]) {
    let downAt = 0;
    let holdTimer = null;
    button.addEventListener("pointerdown", () => {
      downAt = Date.now();
      holdTimer = setTimeout(() => {
        held = true;
        if (video) video.pause();
      }, HOLD_MS);
    });
    const release = () => {
      clearTimeout(holdTimer);
      if (held) {
        held = false;
        if (video && !paused) video.play().catch(() => {});
      }
    };
    button.addEventListener("pointerup", release);
    button.addEventListener("pointerleave", release);
    button.addEventListener("click", () => {
      const wasHold = downAt && Date.now() - downAt >= HOLD_MS;
      downAt = 0;
      if (!wasHold) go(step); // a hold only paused
    });
  }
  pauseButton.addEventListener("click", () => setPaused(!paused));
  closeButton.addEventListener("click", close);
  // Typing a reply or reading the viewers holds the story.
  dialog.addEventListener("focusin", (e) => {
    if (e.target.closest?.(".story-footer input, .story-footer .viewers")) held = true;
  });
  dialog.addEventListener("focusout", (e) => {
    if (e.target.closest?.(".story-footer input")) held = false;
  });

  document.addEventListener("keydown", onKey, true);
  window.addEventListener("hashchange", close);
  document.body.classList.add("story-open");
  document.body.append(dialog);
  pauseButton.focus(); // Space there pauses, as anywhere in the viewer
  timer = setInterval(tick, TICK_MS);
  const first = reels[reelIndex];
  if (first?.stories) {
    reel = first;
    storyIndex = 0;
    show();
  } else openReel(reelIndex, "unseen");
  return { close, dialog };

  function viewersButton(story) {
    const list = h("ul", { class: "viewers", "aria-label": "Viewers", tabindex: "-1" });
    const count = h("button", { type: "button", class: "story-views", "aria-expanded": "false" }, "Seen by …");
    const load = async () => {
      try {
        const doc = await api("GET", `/stories/${story.story_id}/viewers`, { query: { limit: VIEWERS_PAGE } });
        count.textContent = `Seen by ${doc.view_count}`;
        const people = doc.viewers.map(accountOf);
        list.replaceChildren(...people.map((u) => h("li", {}, avatar(u, 24), h("a", { href: `#/u/${encodeURIComponent(u.username)}` }, u.username))));
        // Views reach the list in batches (a second or so); the count has them at once.
        const waiting = doc.view_count - people.length;
        if (!doc.has_more && waiting > 0) list.append(h("li", { class: "hint" }, `${waiting} more in a moment`));
        else if (!people.length) list.append(h("li", {}, "Nobody yet."));
      } catch (err) {
        count.textContent = errorText(err);
      }
    };
    list.hidden = true;
    count.addEventListener("click", () => {
      list.hidden = !list.hidden;
      count.setAttribute("aria-expanded", String(!list.hidden));
      held = !list.hidden;
      if (!list.hidden) load();
    });
    load();
    return h("div", { class: "story-viewers" }, count, list);
  }

  function replyForm(story, author) {
    const text = h("input", { name: "reply", maxlength: 1000, autocomplete: "off", placeholder: `Reply to ${author.username}…` });
    const sendButton = h("button", { type: "submit", class: "primary" }, "Send");
    return h("form", { class: "story-reply", onsubmit: async (e) => {
      e.preventDefault();
      if (!text.value.trim()) return;
      sendButton.disabled = true;
      try {
        await send(`/stories/${story.story_id}/replies`, { text: text.value });
        text.value = "";
        text.blur();
        held = false;
        say(`Reply sent to ${author.username}`);
      } catch (err) {
        say(errorText(err));
      } finally {
        sendButton.disabled = false;
      }
    } }, field(`Reply to ${author.username}`, text), sendButton);
  }
}

// ---- posting --------------------------------------------------------------------------

export function newStoryView() {
  const file = h("input", { type: "file", name: "file", accept: "image/jpeg,image/png,image/webp,image/heic,video/mp4,video/quicktime", required: true });
  const preview = h("div", { class: "previews" });
  const audience = (value, label, checked) => {
    const input = h("input", { type: "radio", name: "audience", value, checked, id: `audience-${value}` });
    return h("div", { class: "field check" }, input, h("label", { for: input.id }, label));
  };
  const canReply = h("input", { type: "checkbox", name: "can_reply", checked: true, id: "can-reply" });
  const progress = h("progress", { max: 100, value: 0, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "progress-text", "aria-live": "polite" });
  const progressRow = h("div", { class: "progress", hidden: true }, progress, progressText);
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Share to your story");
  file.addEventListener("change", () => {
    const f = file.files[0];
    if (!f) return preview.replaceChildren();
    const url = URL.createObjectURL(f);
    preview.replaceChildren(f.type.startsWith("image/")
      ? h("img", { src: url, alt: `Preview of ${f.name}`, class: "preview" })
      : h("video", { src: url, class: "preview", muted: true, "aria-label": `Preview of ${f.name}` }));
  });
  const form = h("form", { class: "card upload", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const chosen = file.files[0];
    if (!chosen) return;
    submit.disabled = true;
    progressRow.hidden = false;
    try {
      const mediaId = await tusUpload(chosen, "", (sent, total) => {
        progress.value = Math.round((sent / total) * 100);
        progressText.textContent = `Uploading: ${progress.value}%`;
      });
      // Followers see the story at once: post it once its photo (or video) is ready.
      progressText.textContent = "Processing…";
      const ready = await waitReady(mediaId);
      if (ready && ready.status !== "ready") throw new Error(`the ${chosen.type.startsWith("video/") ? "video" : "photo"} could not be processed (${ready.status})`);
      const picked = form.querySelector("input[name=audience]:checked").value;
      await api("POST", "/stories", { body: { media_id: mediaId, audience: picked, can_reply: canReply.checked } });
      progressText.textContent = "Shared.";
      say("Added to your story");
      location.hash = "#/";
    } catch (err) {
      progressRow.hidden = true;
      error.textContent = errorText(err); // the API's words (the daily limit included)
    } finally {
      submit.disabled = false;
    }
  } },
    h("h1", {}, "New story"),
    field("A photo or a video (it disappears after 24 hours)", file),
    preview,
    h("fieldset", { class: "audience" }, h("legend", {}, "Who sees it"),
      audience("followers", "Followers", true),
      audience("close_friends", "Close friends only", false)),
    h("div", { class: "field check" }, canReply, h("label", { for: canReply.id }, "Allow replies")),
    progressRow,
    error,
    submit);
  return form;
}
