// A post: its photos (a carousel when several), author, caption with links, likes, saves,
// and on its own page (#/p/<id>) the comments with one level of replies.

import { api, session } from "../api.js";
import { errorText, field, h, say, timeAgo } from "../dom.js";
import { avatar, photo } from "../media.js";
import { richText } from "../text.js";

function altOf(post, m, i) {
  return m.alt_text || `Photo ${i + 1} of ${post.media.length} by @${post.author.username}`;
}

function carousel(post, eager) {
  const slides = post.media.map((m, i) => h("li", { class: "slide", "aria-roledescription": "slide", "aria-label": `${i + 1} of ${post.media.length}` }, photo(m, { alt: altOf(post, m, i), eager: eager && i === 0 })));
  const list = h("ul", { class: "slides" }, slides);
  if (post.media.length === 1) return h("div", { class: "carousel" }, list);
  let index = 0;
  const counter = h("span", { class: "counter", "aria-live": "polite" });
  const show = (i) => {
    index = Math.max(0, Math.min(post.media.length - 1, i));
    slides.forEach((s, j) => (s.hidden = j !== index));
    counter.textContent = `${index + 1} / ${post.media.length}`;
  };
  show(0);
  return h(
    "div",
    { class: "carousel", role: "region", "aria-roledescription": "carousel", "aria-label": "Photos",
      onkeydown: (e) => { if (e.key === "ArrowLeft") show(index - 1); if (e.key === "ArrowRight") show(index + 1); } },
    list,
    h("div", { class: "carousel-nav" },
      h("button", { type: "button", "aria-label": "Previous photo", onclick: () => show(index - 1) }, "‹"),
      counter,
      h("button", { type: "button", "aria-label": "Next photo", onclick: () => show(index + 1) }, "›")),
  );
}

function actions(post) {
  const likeCount = h("span", { class: "count" });
  const like = h("button", { type: "button", class: "toggle like" });
  const save = h("button", { type: "button", class: "toggle save" });
  const paint = () => {
    like.setAttribute("aria-pressed", String(post.viewer_has_liked));
    like.textContent = post.viewer_has_liked ? "♥ Liked" : "♡ Like";
    save.setAttribute("aria-pressed", String(post.viewer_has_saved));
    save.textContent = post.viewer_has_saved ? "Saved" : "Save";
    likeCount.textContent = `${post.like_count} ${post.like_count === 1 ? "like" : "likes"}`;
  };
  const flip = (what, on) => async () => {
    try {
      const doc = await api(on() ? "DELETE" : "PUT", `/posts/${post.post_id}/${what}`);
      Object.assign(post, doc);
      paint();
    } catch (err) {
      say(errorText(err));
    }
  };
  like.addEventListener("click", flip("like", () => post.viewer_has_liked));
  save.addEventListener("click", flip("save", () => post.viewer_has_saved));
  paint();
  return h("div", { class: "actions" }, like,
    h("a", { href: `#/p/${post.post_id}`, class: "button" }, `${post.comment_count} ${post.comment_count === 1 ? "comment" : "comments"}`),
    save, likeCount);
}

export function postCard(post, { eager = false, full = false } = {}) {
  const author = post.author;
  return h(
    "article",
    { class: "post card", "aria-label": `Post by ${author.username}`, dataset: { postId: post.post_id } },
    h("header", { class: "post-head" },
      avatar(author),
      h("div", { class: "who" },
        h("a", { href: `#/u/${author.username}`, class: "author" }, author.username),
        post.place
          ? h("a", { href: `#/places/${post.place.place_id}`, class: "location place" }, post.location || post.place.name)
          : post.location ? h("span", { class: "location" }, post.location) : null),
      h("a", { href: `#/p/${post.post_id}`, class: "time" }, h("time", { datetime: post.created_at }, timeAgo(post.created_at))),
      post.status !== "live" ? h("span", { class: "badge" }, post.status) : null),
    carousel(post, eager),
    actions(post),
    post.caption ? h("p", { class: "caption" }, h("a", { href: `#/u/${author.username}`, class: "author" }, author.username), " ", richText(post.caption)) : null,
    !full && post.comment_count ? h("a", { href: `#/p/${post.post_id}`, class: "more" }, `View ${post.comment_count === 1 ? "1 comment" : `all ${post.comment_count} comments`}`) : null,
  );
}

function commentItem(post, c, reload, replyTo) {
  const me = session.user;
  const own = me && (c.author.username === me.username || post.author.username === me.username);
  const replies = h("ul", { class: "replies" });
  const item = h("li", { class: "comment", dataset: { commentId: c.comment_id } },
    h("p", {}, h("a", { href: `#/u/${c.author.username}`, class: "author" }, c.author.username), " ", richText(c.text)),
    h("div", { class: "meta" },
      h("time", { datetime: c.created_at }, timeAgo(c.created_at)),
      replyTo ? h("button", { type: "button", class: "link", onclick: () => replyTo(c) }, "Reply") : null,
      own ? h("button", { type: "button", class: "link", onclick: async () => {
        try { await api("DELETE", `/posts/${post.post_id}/comments/${c.comment_id}`); reload(); } catch (err) { say(errorText(err)); }
      } }, "Delete") : null,
      c.reply_count ? h("button", { type: "button", class: "link", "aria-expanded": "false", onclick: async (e) => {
        e.target.setAttribute("aria-expanded", "true");
        const page = await api("GET", `/posts/${post.post_id}/comments`, { query: { parent_id: c.comment_id, limit: 100 } });
        replies.replaceChildren(...page.comments.map((r) => commentItem(post, r, reload, null)));
      } }, `View replies (${c.reply_count})`) : null),
    replies);
  return item;
}

export async function postView(postId) {
  const post = await api("GET", `/posts/${postId}`);
  let card = postCard(post, { eager: true, full: true });
  const recount = async () => {
    const fresh = postCard(await api("GET", `/posts/${post.post_id}`), { full: true });
    card.replaceWith(fresh);
    card = fresh;
  };
  const list = h("ul", { class: "comments", "aria-label": "Comments" });
  const text = h("textarea", { name: "comment", rows: 2, maxlength: 2200, required: true });
  let parent = null;
  const replying = h("p", { class: "replying" });
  const setReply = (c) => {
    parent = c;
    replying.replaceChildren(...(c ? [`Replying to ${c.author.username} `, h("button", { type: "button", class: "link", onclick: () => setReply(null) }, "Cancel")] : []));
    text.focus();
  };
  const load = async () => {
    const page = await api("GET", `/posts/${post.post_id}/comments`, { query: { limit: 100 } });
    list.replaceChildren(...page.comments.map((c) => commentItem(post, c, load, setReply)));
  };
  const form = h("form", { class: "comment-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const body = { text: text.value };
      if (parent) body.parent_id = parent.comment_id;
      await api("POST", `/posts/${post.post_id}/comments`, { body });
      text.value = "";
      setReply(null);
      await load();
      await recount();
    } catch (err) { say(errorText(err)); }
  } }, replying, field("Add a comment", text), h("button", { type: "submit", class: "primary" }, "Post comment"));
  const me = session.user;
  const del = me && post.author.username === me.username
    ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm("Delete this post?")) return;
        await api("DELETE", `/posts/${post.post_id}`);
        say("Post deleted");
        location.hash = "#/";
      } }, "Delete post")
    : null;
  await load();
  return h("div", { class: "post-page" }, card, h("section", { class: "card" }, h("h2", {}, "Comments"), list, form, del));
}
