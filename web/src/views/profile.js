// A profile (#/u/<username>): header with counts, follow / unfollow / request, block,
// the grid of posts (or "This account is private"), followers and following lists.

import { api, session } from "../api.js";
import { errorText, h, say } from "../dom.js";
import { avatar, photo } from "../media.js";
import { highlightsRow } from "./highlights.js";

export async function lookup(username) {
  return api("GET", `/usernames/${encodeURIComponent(username)}`);
}

function followButton(user, refresh) {
  const rel = user.relationship;
  const label = rel.following ? "Following" : rel.requested ? "Requested" : rel.followed_by ? "Follow back" : "Follow";
  return h("button", {
    type: "button",
    class: rel.following || rel.requested ? "secondary follow" : "primary follow",
    "aria-pressed": String(rel.following || rel.requested),
    title: rel.following ? "Unfollow" : rel.requested ? "Withdraw the request" : undefined,
    onclick: async () => {
      try {
        if (rel.following || rel.requested) await api("DELETE", `/follows/${user.user_id}`);
        else await api("POST", "/follows", { body: { followee_id: user.user_id } });
        refresh();
      } catch (err) { say(errorText(err)); }
    },
  }, label);
}

function blockButton(user) {
  let blocked = false;
  const button = h("button", { type: "button", class: "secondary danger" }, "Block");
  button.addEventListener("click", async () => {
    try {
      if (blocked) await api("DELETE", `/blocks/${user.user_id}`);
      else {
        if (!confirm(`Block ${user.username}? Follows both ways end.`)) return;
        await api("POST", "/blocks", { body: { user_id: user.user_id } });
      }
      blocked = !blocked;
      button.textContent = blocked ? "Unblock" : "Block";
      say(blocked ? `${user.username} is blocked` : `${user.username} is unblocked`);
    } catch (err) { say(errorText(err)); }
  });
  return button;
}

function grid(userId) {
  const el = h("ul", { class: "grid", "aria-label": "Posts" });
  let cursor = null;
  const more = h("button", { type: "button", class: "more-button", hidden: true }, "Load more");
  const load = async () => {
    try {
      const page = await api("GET", `/users/${userId}/posts`, { query: { limit: 30, cursor } });
      for (const post of page.posts) {
        const first = post.media[0];
        el.append(h("li", {}, h("a", { href: `#/p/${post.post_id}`, "aria-label": `Post: ${post.caption || "photo"}` },
          photo(first, { alt: first.alt_text || `Photo by @${post.author.username}`, square: true, sizes: "(max-width: 640px) 33vw, 200px" }),
          post.media.length > 1 ? h("span", { class: "multi" }, `${post.media.length} photos`) : null)));
      }
      if (!page.posts.length && !cursor) el.replaceWith(h("p", { class: "empty" }, "No posts yet."));
      cursor = page.next_cursor;
      more.hidden = !page.has_more;
    } catch (err) {
      if (err.code === "private_account") el.replaceWith(h("div", { class: "private card" }, h("h2", {}, "This account is private"), h("p", {}, "Follow this account to see their photos.")));
      else el.replaceWith(h("p", { class: "error" }, errorText(err)));
      more.hidden = true;
    }
  };
  more.addEventListener("click", load);
  load();
  return [el, more];
}

export async function profileView(username) {
  const user = await lookup(username);
  const me = session.user;
  const mine = me && me.username === user.username;
  const container = h("div", { class: "profile" });
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  container.append(
    h("header", { class: "profile-head card" },
      avatar(user, 96),
      h("div", {},
        h("h1", {}, user.username, user.is_private ? h("span", { class: "badge" }, "private") : null),
        user.full_name ? h("p", { class: "name" }, user.full_name) : null,
        h("ul", { class: "counts" },
          h("li", {}, h("strong", {}, user.post_count), " posts"),
          h("li", {}, h("a", { href: `#/u/${user.username}/followers` }, h("strong", {}, user.follower_count), " followers")),
          h("li", {}, h("a", { href: `#/u/${user.username}/following` }, h("strong", {}, user.following_count), " following"))),
        user.bio ? h("p", { class: "bio" }, user.bio) : null,
        h("div", { class: "profile-actions" },
          mine ? h("a", { href: "#/settings", class: "button secondary" }, "Edit profile") : [followButton(user, refresh), h("a", { href: `#/messages/to/${encodeURIComponent(user.username)}`, class: "button secondary" }, "Message"), blockButton(user)],
          user.relationship.followed_by && !mine ? h("span", { class: "badge" }, "Follows you") : null))),
    highlightsRow(user, { mine }),
    ...grid(user.user_id),
  );
  return container;
}

export async function followListView(username, which) {
  const user = await lookup(username);
  const list = h("ul", { class: "people card" });
  const view = h("div", {}, h("h1", {}, `${user.username}: ${which}`), list);
  try {
    const page = await api("GET", `/users/${user.user_id}/${which}`, { query: { limit: 100 } });
    list.append(...page.users.map((u) => h("li", {}, avatar(u), h("a", { href: `#/u/${u.username}` }, u.username), u.full_name ? ` ${u.full_name}` : "")));
    if (!page.users.length) list.append(h("li", {}, "Nobody yet."));
  } catch (err) {
    list.replaceWith(h("p", { class: "error" }, err.code === "private_account" ? "This account is private." : errorText(err)));
  }
  return view;
}
