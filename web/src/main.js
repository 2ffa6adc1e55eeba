// pinhole's web client: a hash router over the views, a top bar, and the session.

import { api, session } from "./api.js";
import { events, start as startLive, stop as stopLive } from "./live.js";
import { errorText, h } from "./dom.js";
import { signInView, signOut, signUpView } from "./views/auth.js";
import { feedView } from "./views/feed.js";
import { composeView, inboxView, newScope, refreshMessagesBadge, setBadge, threadView } from "./views/messages.js";
import { notificationsView, requestsView } from "./views/notifications.js";
import { postView } from "./views/post.js";
import { followListView, profileView } from "./views/profile.js";
import { settingsView } from "./views/settings.js";
import { hashtagView, placeView, searchBox, searchView } from "./views/search.js";
import { newStoryView } from "./views/stories.js";
import { uploadView } from "./views/upload.js";

const ROUTES = [
  [/^\/signin$/, () => signInView(), { open: true }],
  [/^\/signup$/, () => signUpView(), { open: true }],
  [/^\/$/, () => feedView()],
  [/^\/new$/, () => uploadView()],
  [/^\/stories\/new$/, () => newStoryView()],
  [/^\/p\/(\d+)$/, (id) => postView(id)],
  [/^\/u\/([^/]+)$/, (name) => profileView(decodeURIComponent(name))],
  [/^\/u\/([^/]+)\/(followers|following)$/, (name, which) => followListView(decodeURIComponent(name), which)],
  [/^\/notifications$/, () => notificationsView()],
  [/^\/requests$/, () => requestsView()],
  [/^\/settings$/, () => settingsView()],
  [/^\/messages$/, () => inboxView("inbox")],
  [/^\/messages\/requests$/, () => inboxView("requests")],
  [/^\/messages\/to\/([^/]+)$/, (name) => composeView(decodeURIComponent(name))],
  [/^\/messages\/(\d+)$/, (id) => threadView(id)],
  [/^\/search(?:\?(.*))?$/, (query) => searchView(new URLSearchParams(query ?? ""))],
  [/^\/tags\/([^/]+)$/, (tag) => hashtagView(decodeURIComponent(tag))],
  [/^\/places\/(\d+)$/, (id) => placeView(id)],
];

function topBar() {
  const user = session.user;
  return h("nav", { "aria-label": "Main" },
    h("a", { href: "#/", class: "brand" }, "pinhole"),
    user
      ? [
          searchBox(),
          h("a", { href: "#/" }, "Home"),
          h("a", { href: "#/new" }, "New post"),
          h("a", { href: "#/messages", id: "nav-messages" }, "Messages"),
          h("a", { href: "#/notifications", id: "nav-notifications" }, "Notifications"),
          h("a", { href: `#/u/${user.username}` }, "Profile"),
          h("a", { href: "#/settings" }, "Settings"),
          h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
        ]
      : [h("a", { href: "#/signin" }, "Sign in"), h("a", { href: "#/signup" }, "Sign up")]);
}

async function unreadBadge() {
  if (!session.token) return;
  try {
    const page = await api("GET", "/notifications", { query: { limit: 1 } });
    setBadge("nav-notifications", page.unread_count, `${page.unread_count} unread`);
  } catch {
    // the badge is a nicety
  }
}

let generation = 0;

async function render() {
  const path = location.hash.replace(/^#/, "") || "/";
  const main = document.getElementById("main");
  const mine = ++generation;
  newScope();
  // Live updates while signed in (a 401 or a sign-out clears the token: disconnect).
  if (session.token) startLive();
  else stopLive();
  document.getElementById("top").replaceChildren(topBar());
  for (const [pattern, view, options = {}] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    if (!options.open && !session.token) {
      location.hash = "#/signin";
      return;
    }
    if (options.open && session.token) {
      location.hash = "#/";
      return;
    }
    main.replaceChildren(h("p", { class: "loading" }, "Loading…"));
    try {
      const el = await view(...match.slice(1));
      if (mine !== generation) return;
      main.replaceChildren(el);
    } catch (err) {
      if (mine !== generation) return;
      main.replaceChildren(h("div", { class: "card" }, h("h1", {}, err.status === 404 ? "Not found" : "Something went wrong"), h("p", { class: "error" }, errorText(err))));
    }
    unreadBadge();
    refreshMessagesBadge();
    return;
  }
  main.replaceChildren(h("div", { class: "card" }, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Home"))));
}

// The badges follow the wake-ups (and catch up after a reconnection).
events.addEventListener("notification", unreadBadge);
for (const name of ["message", "read", "connected"]) events.addEventListener(name, refreshMessagesBadge);
events.addEventListener("connected", unreadBadge);

// The skip link focuses the content without touching the route in the fragment.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});

window.addEventListener("hashchange", () => {
  render();
  document.getElementById("main").focus({ preventScroll: true });
  window.scrollTo(0, 0);
});
render();
