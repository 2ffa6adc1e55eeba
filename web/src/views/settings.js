// Settings: profile (name, bio, private account), avatar, password, close friends (who
// sees a close-friends story), sessions.

import { api, session } from "../api.js";
import { errorText, field, h, say, timeAgo } from "../dom.js";
import { avatar } from "../media.js";
import { lookup } from "./profile.js";
import { userOf } from "./stories.js";

const AVATAR_WAIT_S = 10;

function profileForm(me) {
  const fullName = h("input", { name: "full_name", maxlength: 100, value: me.full_name });
  const bio = h("textarea", { name: "bio", maxlength: 150, rows: 2 });
  bio.value = me.bio;
  const isPrivate = h("input", { type: "checkbox", name: "is_private", checked: me.is_private });
  return h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const doc = await api("PATCH", "/accounts/me", { body: { full_name: fullName.value, bio: bio.value, is_private: isPrivate.checked } });
      session.saveUser(doc);
      say("Profile saved");
    } catch (err) { say(errorText(err)); }
  } },
    h("h2", {}, "Profile"),
    field("Name", fullName),
    field("Bio", bio),
    h("div", { class: "field check" }, isPrivate, h("label", { for: (isPrivate.id = "is-private") }, "Private account: only approved followers see your photos")),
    h("button", { type: "submit", class: "primary" }, "Save profile"));
}

function avatarForm(me) {
  const file = h("input", { type: "file", name: "avatar", accept: "image/jpeg,image/png,image/webp,image/heic", required: true });
  const current = h("div", { class: "current-avatar" }, avatar(me, 80));
  return h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    if (!file.files[0]) return;
    try {
      const form = new FormData();
      form.append("media_type", "image");
      form.append("file", file.files[0]);
      say("Uploading…");
      const media = await api("POST", "/media/upload", { form });
      await api("GET", `/media/${media.media_id}`, { query: { wait_s: AVATAR_WAIT_S } });
      const doc = await api("PATCH", "/accounts/me", { body: { avatar_media_id: media.media_id } });
      session.saveUser(doc);
      current.replaceChildren(avatar(doc, 80));
      say("Profile picture changed");
    } catch (err) { say(errorText(err)); }
  } }, h("h2", {}, "Profile picture"), current, field("New picture", file), h("button", { type: "submit", class: "primary" }, "Upload"));
}

function passwordForm() {
  const current = h("input", { type: "password", name: "current_password", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", name: "new_password", autocomplete: "new-password", minlength: 8, required: true });
  return h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const doc = await api("POST", "/accounts/me/password", { body: { current_password: current.value, new_password: next.value } });
      current.value = next.value = "";
      say(`Password changed; ${doc.sessions_revoked} other sessions signed out`);
    } catch (err) { say(errorText(err)); }
  } }, h("h2", {}, "Password"), field("Current password", current), field("New password", next), h("button", { type: "submit", class: "primary" }, "Change password"));
}

const CLOSE_FRIENDS_PAGE = 100;

async function closeFriendsCard() {
  const list = h("ul", { class: "people", "aria-label": "Close friends" });
  const name = h("input", { name: "close_friend", autocapitalize: "none", autocomplete: "off", placeholder: "username" });
  const load = async () => {
    const friends = [];
    let cursor = null;
    do {
      const page = await api("GET", "/close_friends", { query: { limit: CLOSE_FRIENDS_PAGE, cursor } });
      friends.push(...page.users);
      cursor = page.has_more ? page.next_cursor : null;
    } while (cursor);
    const people = await Promise.all(friends.map((f) => (f.username ? f : userOf(f.user_id))));
    list.replaceChildren(...people.map((u) => h("li", {}, avatar(u), h("a", { href: `#/u/${encodeURIComponent(u.username)}` }, u.username),
      h("button", { type: "button", class: "secondary", "aria-label": `Remove ${u.username} from close friends`, onclick: async () => {
        try {
          await api("DELETE", `/close_friends/${u.user_id}`);
          say(`${u.username} is no longer a close friend`);
          load();
        } catch (err) { say(errorText(err)); }
      } }, "Remove"))));
    if (!people.length) list.append(h("li", {}, "Nobody yet."));
  };
  await load();
  return h("section", { class: "card" }, h("h2", {}, "Close friends"),
    h("p", { class: "hint" }, "Stories you share with close friends reach only these accounts."),
    list,
    h("form", { class: "inline-form", onsubmit: async (e) => {
      e.preventDefault();
      const username = name.value.trim().replace(/^@/, "").toLowerCase();
      if (!username) return;
      try {
        const user = await lookup(username);
        await api("POST", "/close_friends", { body: { user_id: user.user_id } });
        name.value = "";
        say(`${user.username} is a close friend`);
        await load();
      } catch (err) { say(err.status === 404 ? `No account named ${username}` : errorText(err)); }
    } }, field("Add a close friend", name), h("button", { type: "submit", class: "primary" }, "Add")));
}

async function sessionsCard() {
  const list = h("ul", { class: "sessions" });
  const load = async () => {
    const doc = await api("GET", "/sessions");
    list.replaceChildren(...doc.sessions.map((s) => h("li", {},
      h("span", {}, s.user_agent || "unknown client", " · ", s.address, " · last used ", timeAgo(s.last_used_at), s.current ? " (this one)" : ""),
      s.current ? null : h("button", { type: "button", class: "secondary", onclick: async () => { await api("DELETE", `/sessions/${s.session_id}`); load(); } }, "Sign out"))));
  };
  await load();
  return h("section", { class: "card" }, h("h2", {}, "Sessions"), list,
    h("button", { type: "button", class: "danger", onclick: async () => {
      await api("DELETE", "/sessions");
      session.clear();
      location.hash = "#/signin";
    } }, "Sign out everywhere"));
}

export async function settingsView() {
  const me = await api("GET", "/accounts/me");
  session.saveUser(me);
  return h("div", { class: "settings" }, h("h1", {}, "Settings"), profileForm(me), avatarForm(me), passwordForm(), await closeFriendsCard(), await sessionsCard());
}
