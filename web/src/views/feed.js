// The home feed (GET /api/v1/feed): chronological or ranked, pages loaded as the end of the
// list scrolls into view (an IntersectionObserver on a sentinel), or by the button.

import { api } from "../api.js";
import { errorText, h } from "../dom.js";
import { postCard } from "./post.js";
import { storiesTray } from "./stories.js";

const PAGE_SIZE = 10;
// The next page is fetched when the end of the list comes this close to the viewport.
const PREFETCH_PX = 800;
const MODE_KEY = "pinhole.feedMode";

export function feedView() {
  let mode = localStorage.getItem(MODE_KEY) || "chronological";
  let cursor = null;
  let done = false;
  let loading = false;
  let shown = 0;
  const list = h("div", { class: "feed", role: "region", "aria-label": "Home feed", "aria-busy": "false" });
  const more = h("button", { type: "button", class: "more-button" }, "Load more");
  const end = h("p", { class: "end" });
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  const nearEnd = () => sentinel.isConnected && sentinel.getBoundingClientRect().top < innerHeight + PREFETCH_PX;
  const load = async () => {
    if (loading || done) return;
    loading = true;
    list.setAttribute("aria-busy", "true");
    try {
      const page = await api("GET", "/feed", { query: { limit: PAGE_SIZE, mode, cursor } });
      for (const post of page.posts) list.append(postCard(post, { eager: shown++ < 2 }));
      cursor = page.next_cursor;
      done = !page.has_more;
      more.hidden = done;
      end.textContent = done ? (shown ? "You're all caught up." : "Nothing here yet: follow people or share a photo.") : "";
    } catch (err) {
      end.textContent = errorText(err);
      return; // no automatic retry: the button stays
    } finally {
      loading = false;
      list.setAttribute("aria-busy", "false");
    }
    // A short page leaves the end in view, where the observer does not fire again.
    if (!done && nearEnd()) load();
  };
  more.addEventListener("click", load);
  const modes = h("div", { class: "tabs", role: "group", "aria-label": "Feed order" },
    ["chronological", "ranked"].map((m) => h("button", { type: "button", "aria-pressed": String(m === mode), onclick: () => {
      localStorage.setItem(MODE_KEY, m);
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } }, m === "chronological" ? "Latest" : "For you")));
  let attached = false;
  const observer = new IntersectionObserver((entries) => {
    if (sentinel.isConnected) attached = true;
    else if (attached) return observer.disconnect(); // the view was left
    if (entries.some((e) => e.isIntersecting)) load();
  }, { rootMargin: `${PREFETCH_PX}px` });
  observer.observe(sentinel);
  load();
  return h("div", {}, h("h1", { class: "sr" }, "Home"), storiesTray(), modes, list, sentinel, end, more);
}
