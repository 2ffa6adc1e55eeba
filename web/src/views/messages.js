// Direct messages (docs/api/messages.md): the inbox and the requests folder
// (#/messages, #/messages/requests), a thread (#/messages/<id>), and a new conversation
// from a profile (#/messages/to/<username>). Live: the views listen to live.js's wake-ups
// and catch up through the API by change sequence, so they show the same thing whether an
// event arrived, arrived twice, or was lost and the next (re)connection caught up.

import { api, ApiError, session } from "../api.js";
import { errorText, field, h, say, timeAgo } from "../dom.js";
import { events, typing } from "../live.js";
import { avatar, photo } from "../media.js";
import { lookup } from "./profile.js";
import { tusUpload, waitReady } from "./upload.js";

const PAGE_SIZE = 50;
const REACTION = "❤";
// A typing indicator shows this long after the last typing event.
const TYPING_SHOWN_MS = 6000;
// A send that got no answer (the network) is retried with the same client id, so a retry
// never makes a second message.
const SEND_RETRY_DELAYS_MS = [500, 1500, 4000];
const INBOX_REFRESH_MS = 150;

// The views of the current screen listen until the next screen (main.js aborts it).
// A view takes the signal when it starts, so a view still loading when the screen changed
// never listens on the next screen's behalf.
let scope = new AbortController();
export function newScope() {
  scope.abort();
  scope = new AbortController();
}

// The signal of the current screen (aborted when the next one opens).
export function screenSignal() {
  return scope.signal;
}

function listen(signal, names, handler) {
  for (const name of names) events.addEventListener(name, handler, { signal });
}

const users = new Map();
async function userOf(id) {
  if (!users.has(id)) {
    users.set(id, api("GET", `/users/${id}`).catch(() => ({ user_id: id, username: "someone" })));
  }
  return users.get(id);
}

function me() {
  return session.user;
}

function clientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function send(path, body) {
  const doc = { ...body, client_id: clientId() };
  for (let i = 0; ; i++) {
    try {
      return await api("POST", path, { body: doc });
    } catch (err) {
      if (err instanceof ApiError || i >= SEND_RETRY_DELAYS_MS.length) throw err;
      await new Promise((resolve) => setTimeout(resolve, SEND_RETRY_DELAYS_MS[i]));
    }
  }
}

function preview(m, mine) {
  if (!m) return "";
  const who = mine ? "You: " : "";
  if (m.unsent) return `${who}Message unsent`;
  const what = { media: "Photo", post: "Shared a post", story_reply: "Replied to a story" }[m.kind];
  return who + [what, m.text].filter(Boolean).join(": ");
}

async function othersOf(thread) {
  const mine = me().user_id;
  const ids = thread.members.map((m) => m.user_id).filter((id) => id !== mine);
  return Promise.all(ids.map(userOf));
}

function threadName(thread, others) {
  return thread.title || others.map((u) => u.username).join(", ") || "Only you";
}

// The Messages link's badge: how many inbox threads have unread messages.
export async function refreshMessagesBadge() {
  if (!session.token) return;
  try {
    const page = await api("GET", "/threads", { query: { folder: "inbox", limit: PAGE_SIZE } });
    const unread = page.threads.filter((t) => t.unread_count > 0).length;
    setBadge("nav-messages", unread, `${unread} unread conversations`);
  } catch {
    // the badge is a nicety
  }
}

export function setBadge(linkId, count, label) {
  const link = document.getElementById(linkId);
  if (!link) return;
  link.querySelector(".badge")?.remove();
  if (count) link.append(h("span", { class: "badge", "aria-label": label }, String(count)));
}

// #/messages and #/messages/requests
export async function inboxView(folder = "inbox") {
  const signal = scope.signal;
  const requests = folder === "requests";
  const list = h("ul", { class: "threads card", "aria-label": requests ? "Message requests" : "Conversations" });
  const load = async () => {
    const page = await api("GET", "/threads", { query: { folder, limit: PAGE_SIZE } });
    const items = await Promise.all(page.threads.map((t) => threadItem(t, { requests, reload })));
    list.replaceChildren(...items);
    if (!page.threads.length) {
      list.append(h("li", { class: "empty" }, requests ? "No message requests." : "No messages yet. Start one from a profile."));
    }
  };
  let pending = null;
  const reload = () => {
    clearTimeout(pending);
    pending = setTimeout(() => load().catch((err) => say(errorText(err))), INBOX_REFRESH_MS);
  };
  await load();
  listen(signal, ["message", "unsend", "read", "connected"], reload);
  return h("div", { class: "inbox" },
    h("h1", {}, requests ? "Message requests" : "Messages"),
    h("nav", { class: "tabs", "aria-label": "Folders" },
      h("a", { href: "#/messages", class: "button secondary", "aria-current": requests ? null : "page" }, "Inbox"),
      h("a", { href: "#/messages/requests", class: "button secondary", "aria-current": requests ? "page" : null }, "Requests")),
    requests ? h("p", { class: "hint" }, "Messages from people you don't follow wait here until you accept them.") : null,
    list);
}

async function threadItem(thread, { requests, reload }) {
  const others = await othersOf(thread);
  const name = threadName(thread, others);
  const last = thread.last_message;
  const unread = thread.unread_count;
  const item = h("li", { class: unread ? "unread" : "" },
    others[0] ? avatar(others[0], 40) : null,
    h("div", { class: "thread-summary" },
      h("a", { href: `#/messages/${thread.thread_id}` }, name),
      h("p", { class: "thread-preview" }, preview(last, last && last.sender_id === me().user_id))),
    last ? h("time", { datetime: last.created_at }, timeAgo(last.created_at)) : null,
    unread ? h("span", { class: "badge", "aria-label": `${unread} unread` }, String(unread)) : null,
    requests
      ? h("button", { type: "button", class: "primary", onclick: async () => {
          try {
            await api("POST", `/threads/${thread.thread_id}/accept`);
            say(`${name} moved to your inbox`);
            reload();
          } catch (err) { say(errorText(err)); }
        } }, "Accept")
      : null);
  return item;
}

// A composer: text, or a photo (uploaded with tus like a post's), sent by `deliver`.
function composer(deliver, { threadId } = {}) {
  const text = h("textarea", { name: "text", rows: 2, maxlength: 2200, placeholder: "Message…" });
  const file = h("input", { type: "file", name: "photo", accept: "image/jpeg,image/png,image/webp,image/heic" });
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Send");
  const sending = h("span", { class: "progress-text", "aria-live": "polite" });
  const busy = async (work) => {
    error.textContent = "";
    submit.disabled = file.disabled = true;
    try {
      await work();
    } catch (err) {
      error.textContent = err.code === "blocked" ? "You can't message this account." : errorText(err);
    } finally {
      submit.disabled = file.disabled = false;
    }
  };
  if (threadId) text.addEventListener("input", () => text.value && typing(threadId));
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  file.addEventListener("change", () => {
    const chosen = file.files[0];
    if (!chosen) return;
    busy(async () => {
      sending.textContent = "Sending the photo…";
      try {
        const mediaId = await tusUpload(chosen, "", (sent, total) => {
          sending.textContent = `Uploading the photo: ${Math.round((sent / total) * 100)}%`;
        });
        await waitReady(mediaId);
        await deliver({ kind: "media", media_id: mediaId, ...(text.value.trim() ? { text: text.value } : {}) });
        text.value = "";
      } finally {
        sending.textContent = "";
        file.value = "";
      }
    });
  });
  const form = h("form", { class: "composer", onsubmit: (e) => {
    e.preventDefault();
    const value = text.value;
    if (!value.trim()) return;
    busy(async () => {
      await deliver({ kind: "text", text: value });
      text.value = "";
      text.focus();
    });
  } },
    field("Message", text),
    h("div", { class: "composer-actions" }, field("Send a photo", file), submit),
    sending,
    error);
  return form;
}

// #/messages/to/<username>: the 1:1 thread with that user if there is one, else a
// composer whose first message makes it.
export async function composeView(username) {
  const user = await lookup(username);
  const mine = me().user_id;
  for (const folder of ["inbox", "requests"]) {
    const page = await api("GET", "/threads", { query: { folder, limit: PAGE_SIZE } });
    const found = page.threads.find((t) => t.kind === "direct" && t.members.length === 2
      && t.members.some((m) => m.user_id === user.user_id) && t.members.some((m) => m.user_id === mine));
    if (found) {
      location.replace(`#/messages/${found.thread_id}`);
      return h("p", { class: "loading" }, "Loading…");
    }
  }
  return h("div", { class: "thread" },
    h("h1", {}, `New message to ${user.username}`),
    h("div", { class: "card" },
      h("p", { class: "hint" }, user.relationship?.followed_by
        ? `${user.username} follows you: your message goes to their inbox.`
        : `${user.username} doesn't follow you: your message goes to their message requests.`),
      composer(async (body) => {
        const sent = await send("/messages", { ...body, recipient_ids: [user.user_id] });
        location.hash = `#/messages/${sent.thread_id}`;
      })));
}

// #/messages/<thread id>
export async function threadView(threadId) {
  const signal = scope.signal;
  let thread = await api("GET", `/threads/${threadId}`);
  const others = await othersOf(thread);
  const mine = me().user_id;
  const names = new Map([[mine, me().username], ...others.map((u) => [u.user_id, u.username])]);
  const messages = new Map(); // message_id -> message, at its latest change
  const rows = new Map(); // message_id -> [change_seq, element]
  const hidden = new Set(); // deleted for me: a change already on its way is not drawn
  const forget = (id) => {
    hidden.add(id);
    rows.get(id)?.[1].remove();
    rows.delete(id);
    messages.delete(id);
    paintReceipt();
  };
  let afterSeq = 0;
  const receipts = new Map(thread.members.map((m) => [m.user_id, m.last_read_seq]));
  // A request is read without telling its sender, until it is accepted (or answered).
  let accepted = thread.accepted;
  const log = h("ol", { class: "messages" });
  const typingLine = h("p", { class: "typing", "aria-live": "polite" });
  const receipt = h("p", { class: "receipt" });
  let typingTimer = null;

  const paintReceipt = () => {
    const lastMine = [...messages.values()].filter((m) => m.sender_id === mine && !m.unsent).sort((a, b) => b.seq - a.seq)[0];
    if (!lastMine) {
      receipt.textContent = "";
      return;
    }
    const seen = others.filter((u) => (receipts.get(u.user_id) || 0) >= lastMine.seq);
    receipt.textContent = !seen.length ? "Sent"
      : others.length === 1 ? "Seen" : `Seen by ${seen.map((u) => u.username).join(", ")}`;
  };

  const row = (m) => {
    const from = m.sender_id === mine;
    const who = names.get(m.sender_id) || "someone";
    const mineReaction = m.reactions.find((r) => r.user_id === mine);
    const body = m.unsent
      ? h("p", { class: "unsent" }, "Message unsent")
      : [
          m.kind === "story_reply" ? h("p", { class: "quote" }, "Replied to a story") : null,
          m.kind === "post" && m.post_id ? h("p", {}, h("a", { href: `#/p/${m.post_id}` }, "Shared a post")) : null,
          m.media ? photo(m.media, { alt: m.media.alt_text || `Photo from ${who}`, sizes: "320px", eager: true }) : null,
          m.kind === "media" && !m.media ? h("p", { class: "unsent" }, "Photo no longer available") : null,
          m.text ? h("p", { class: "text" }, m.text) : null,
        ];
    const actions = m.unsent ? null : h("div", { class: "message-actions" },
      h("button", {
        type: "button",
        class: "link toggle",
        "aria-pressed": String(Boolean(mineReaction)),
        "aria-label": mineReaction ? `Remove your ${REACTION} from this message` : `React ${REACTION} to this message`,
        onclick: async () => {
          const path = `/threads/${threadId}/messages/${m.message_id}/reaction`;
          try {
            if (mineReaction) await api("DELETE", path);
            else await api("PUT", path, { body: { emoji: REACTION } });
            await catchUp();
          } catch (err) { say(errorText(err)); }
        },
      }, REACTION),
      from ? h("button", { type: "button", class: "link danger", onclick: async () => {
        try {
          await api("DELETE", `/threads/${threadId}/messages/${m.message_id}`);
          await catchUp();
        } catch (err) { say(errorText(err)); }
      } }, "Unsend") : null,
      h("button", { type: "button", class: "link", onclick: async () => {
        try {
          await api("POST", `/threads/${threadId}/messages/${m.message_id}/hide`);
          forget(m.message_id);
          say("Deleted for you");
        } catch (err) { say(errorText(err)); }
      } }, "Delete for me"));
    const reactions = m.reactions.length
      ? h("p", { class: "reactions", "aria-label": `Reactions: ${m.reactions.map((r) => `${r.emoji} from ${names.get(r.user_id) || "someone"}`).join(", ")}` },
          m.reactions.map((r) => r.emoji).join(" "), m.reactions.length > 1 ? ` ${m.reactions.length}` : "")
      : null;
    return h("li", { class: from ? "message mine" : "message", dataset: { seq: m.seq, messageId: m.message_id } },
      h("span", { class: from ? "sr" : "from" }, from ? "You" : who),
      h("div", { class: "bubble" }, body),
      reactions,
      h("time", { datetime: m.created_at, class: "sr" }, timeAgo(m.created_at)),
      actions);
  };

  // Each message drawn once per change, kept in `seq` order (the same for every member).
  const apply = (list) => {
    for (const m of list) {
      if (hidden.has(m.message_id)) continue;
      const had = rows.get(m.message_id);
      if (had && had[0] >= m.change_seq) continue;
      messages.set(m.message_id, m);
      const el = row(m);
      if (had) had[1].replaceWith(el);
      else {
        // Their message arrived: they stopped typing it.
        if (m.sender_id !== mine) typingLine.textContent = "";
        const next = [...log.children].find((li) => Number(li.dataset.seq) > m.seq);
        log.insertBefore(el, next || null);
      }
      rows.set(m.message_id, [m.change_seq, el]);
    }
    paintReceipt();
  };

  let running = null;
  let again = false;
  // Everything after the last change applied, page by page; concurrent wake-ups fold
  // into one more round.
  const catchUp = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        let page;
        do {
          page = await api("GET", `/threads/${threadId}/messages`, { query: { after_seq: afterSeq, limit: PAGE_SIZE } });
          apply(page.messages);
          afterSeq = Math.max(afterSeq, page.next_after_seq);
        } while (page.has_more);
      } while (again);
      await markRead();
    })().finally(() => { running = null; });
    return running;
  };

  // Read up to the newest message when the page is in front and there is something new.
  const markRead = async () => {
    if (!accepted || document.visibilityState !== "visible" || !view.isConnected) return;
    const newest = Math.max(0, ...[...messages.values()].map((m) => m.seq));
    if (newest > (receipts.get(mine) || 0) && [...messages.values()].some((m) => m.seq > (receipts.get(mine) || 0) && m.sender_id !== mine)) {
      try {
        const doc = await api("POST", `/threads/${threadId}/read`, { body: { seq: newest } });
        receipts.set(mine, doc.last_read_seq);
        refreshMessagesBadge();
      } catch {
        // a receipt is a nicety; the next catch-up tries again
      }
    }
  };

  const accept = thread.accepted ? null : h("div", { class: "card request" },
    h("p", {}, `${threadName(thread, others)} wants to send you a message. They won't know you've seen it until you accept.`),
    h("button", { type: "button", class: "primary", onclick: async () => {
      try {
        await api("POST", `/threads/${threadId}/accept`);
        accepted = true;
        accept.remove();
        say("Moved to your inbox");
        await markRead();
      } catch (err) { say(errorText(err)); }
    } }, "Accept"));

  const view = h("div", { class: "thread" },
    h("h1", {}, others.length === 1
      ? h("a", { href: `#/u/${others[0].username}`, class: "author" }, others[0].username)
      : threadName(thread, others)),
    h("p", {}, h("a", { href: thread.folder === "requests" ? "#/messages/requests" : "#/messages" }, "Back to messages")),
    accept,
    h("div", { class: "card conversation" },
      // A log: new messages are announced as they arrive.
      h("div", { role: "log", "aria-label": "Messages", "aria-live": "polite" }, log),
      receipt,
      typingLine,
      composer(async (body) => {
        const sent = await send(`/threads/${threadId}/messages`, body);
        accepted = true; // a reply accepts
        if (accept?.isConnected) accept.remove();
        // The answer has the message but not its photo's URLs: a photo comes with the catch-up.
        if (!sent.media_id) apply([sent]);
        await catchUp();
      }, { threadId })));

  const mineEvent = (e) => e.detail.thread_id === threadId;
  listen(signal, ["message", "reaction", "unsend"], (e) => {
    if (mineEvent(e) && !(e.detail.change_seq <= afterSeq)) catchUp().catch(() => {});
  });
  listen(signal, ["read"], (e) => {
    if (!mineEvent(e)) return;
    receipts.set(e.detail.user_id, Math.max(receipts.get(e.detail.user_id) || 0, e.detail.seq));
    paintReceipt();
  });
  listen(signal, ["typing"], (e) => {
    if (!mineEvent(e) || e.detail.user_id === mine) return;
    typingLine.textContent = `${names.get(e.detail.user_id) || "someone"} is typing…`;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { typingLine.textContent = ""; }, TYPING_SHOWN_MS);
  });
  // (Re)connected: anything may have been missed, receipts too.
  listen(signal, ["connected"], async () => {
    try {
      thread = await api("GET", `/threads/${threadId}`);
      for (const m of thread.members) receipts.set(m.user_id, Math.max(receipts.get(m.user_id) || 0, m.last_read_seq));
      await catchUp();
    } catch {
      // the next wake-up tries again
    }
  });
  document.addEventListener("visibilitychange", () => markRead(), { signal });
  await catchUp();
  // Once on screen (main.js shows the view when this returns): the receipt.
  setTimeout(() => markRead(), 0);
  return view;
}
