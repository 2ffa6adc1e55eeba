// Search (docs/api/search.md): the top bar's typeahead (an ARIA combobox over a listbox
// grouped as accounts, hashtags and places), the full results page (#/search?q=&type=),
// hashtag pages (#/tags/<name>) and place pages (#/places/<id>): a count, then the Top or
// Recent posts as a grid whose next page loads as its end scrolls into view.

import { api } from "../api.js";
import { errorText, h } from "../dom.js";
import { avatar, photo } from "../media.js";

// The typeahead asks once typing has paused this long.
const TYPEAHEAD_DEBOUNCE_MS = 150;
const RESULTS_LIMIT = 50;
const PAGE_POSTS = 24;
// The next page of a grid is fetched when its end comes this close to the viewport.
const PREFETCH_PX = 800;
const KINDS = [["accounts", "Accounts"], ["hashtags", "Hashtags"], ["places", "Places"]];

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

export const hrefOf = {
  accounts: (a) => `#/u/${encodeURIComponent(a.username)}`,
  hashtags: (t) => `#/tags/${encodeURIComponent(t.name)}`,
  places: (p) => `#/places/${p.place_id}`,
};

function resultBody(kind, item) {
  if (kind === "accounts") {
    return [h("span", { "aria-hidden": "true" }, avatar(item, 32)),
      h("span", { class: "result-text" }, h("strong", {}, item.username), item.full_name ? [" ", h("span", { class: "muted" }, item.full_name)] : null)];
  }
  const name = kind === "hashtags" ? `#${item.name}` : item.name;
  return [h("span", { class: "result-icon", "aria-hidden": "true" }, kind === "hashtags" ? "#" : "📍"),
    h("span", { class: "result-text" }, h("strong", {}, name), " ", h("span", { class: "muted" }, plural(item.post_count, "post", "posts")))];
}

/** The top bar's search box: a combobox whose listbox shows the typeahead's answer grouped
 * by kind. ↓ and ↑ move through the options, Enter opens the active one (or, with none
 * active, the full results page), Escape closes the list (and, closed, clears the box). */
export function searchBox() {
  const listId = "typeahead-list";
  const input = h("input", {
    type: "text", name: "q", placeholder: "Search", autocomplete: "off", autocapitalize: "none", spellcheck: "false",
    role: "combobox", "aria-label": "Search", "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": listId,
  });
  const list = h("div", { id: listId, role: "listbox", "aria-label": "Search suggestions", class: "typeahead", hidden: true });
  const status = h("span", { class: "sr", role: "status", "aria-live": "polite" });
  let options = [];
  let active = -1;
  let timer = null;
  let asked = 0;

  const setActive = (i) => {
    options.forEach((o, j) => o.setAttribute("aria-selected", String(j === i)));
    active = i;
    if (i >= 0) {
      input.setAttribute("aria-activedescendant", options[i].id);
      options[i].scrollIntoView({ block: "nearest" });
    } else input.removeAttribute("aria-activedescendant");
  };
  const close = () => {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    setActive(-1);
  };
  const open = (href) => {
    close();
    location.hash = href;
  };
  const paint = (doc) => {
    options = [];
    list.replaceChildren();
    for (const [kind, title] of KINDS) {
      const items = doc[kind] ?? [];
      if (!items.length) continue;
      const groupLabel = `typeahead-${kind}`;
      list.append(h("div", { role: "group", "aria-labelledby": groupLabel },
        h("div", { id: groupLabel, class: "group-title", role: "presentation" }, title),
        items.map((item) => {
          const option = h("div", {
            role: "option", id: `typeahead-${options.length}`, class: "result", "aria-selected": "false",
            dataset: { href: hrefOf[kind](item) },
            onmousedown: (e) => e.preventDefault(), // keep the focus in the box
            onclick: () => open(hrefOf[kind](item)),
          }, resultBody(kind, item));
          options.push(option);
          return option;
        })));
    }
    if (!options.length) list.append(h("div", { class: "none", role: "presentation" }, "No results"));
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    setActive(-1);
    status.textContent = options.length ? `${plural(options.length, "suggestion", "suggestions")}` : "No results";
  };
  const ask = async () => {
    const q = input.value.trim();
    const mine = ++asked;
    if (!q) return close();
    try {
      const doc = await api("GET", "/search", { query: { q, typeahead: "true" } });
      if (mine === asked && document.activeElement === input) paint(doc);
    } catch {
      if (mine === asked) close(); // the full results page says what went wrong
    }
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(ask, TYPEAHEAD_DEBOUNCE_MS);
  });
  input.addEventListener("keydown", (e) => {
    const shown = !list.hidden && options.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (list.hidden) return void ask();
      if (!shown) return;
      const step = e.key === "ArrowDown" ? 1 : -1;
      setActive(active < 0 ? (step > 0 ? 0 : options.length - 1) : (active + step + options.length) % options.length);
    } else if (e.key === "Enter") {
      e.preventDefault();
      clearTimeout(timer);
      if (shown && active >= 0) open(options[active].dataset.href);
      else if (input.value.trim()) open(`#/search?q=${encodeURIComponent(input.value.trim())}`);
    } else if (e.key === "Escape") {
      if (!list.hidden) { e.preventDefault(); close(); }
      else input.value = "";
    }
  });
  input.addEventListener("blur", close);
  return h("form", { class: "find", role: "search", onsubmit: (e) => e.preventDefault() }, input, list, status);
}

function kindTabs(q, type) {
  return h("nav", { class: "tabs", "aria-label": "Kind of result" },
    KINDS.map(([kind, title]) => h("a", { href: `#/search?q=${encodeURIComponent(q)}&type=${kind}`, class: "button", "aria-current": kind === type ? "page" : undefined }, title)));
}

/** #/search?q=&type=: the full results of one kind (accounts by default). */
export async function searchView(params) {
  const q = (params.get("q") ?? "").trim();
  const type = KINDS.some(([k]) => k === params.get("type")) ? params.get("type") : "accounts";
  const title = h("h1", {}, q ? `Results for “${q}”` : "Search");
  if (!q) return h("div", { class: "search-page" }, title, h("p", {}, "Type in the search box at the top."));
  const doc = await api("GET", "/search", { query: { q, type, limit: RESULTS_LIMIT } });
  const items = doc[type] ?? [];
  const list = h("ul", { class: "people card results", "aria-label": KINDS.find(([k]) => k === type)[1] },
    items.map((item) => h("li", {}, h("a", { href: hrefOf[type](item), class: "result" }, resultBody(type, item)))));
  return h("div", { class: "search-page" }, title, kindTabs(q, type),
    items.length ? list : h("p", { class: "empty card" }, "No results."));
}

/** A grid of posts read page by page from `path` (`{posts, next_cursor, has_more}`). */
function postGrid(path, label) {
  const el = h("ul", { class: "grid", "aria-label": label, "aria-busy": "false" });
  const more = h("button", { type: "button", class: "more-button", hidden: true }, "Load more");
  const end = h("p", { class: "end" });
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  let cursor = null;
  let done = false;
  let loading = false;
  let shown = 0;
  const nearEnd = () => sentinel.isConnected && sentinel.getBoundingClientRect().top < innerHeight + PREFETCH_PX;
  const load = async () => {
    if (loading || done) return;
    loading = true;
    el.setAttribute("aria-busy", "true");
    try {
      const page = await api("GET", path, { query: { limit: PAGE_POSTS, cursor } });
      for (const post of page.posts) {
        const first = post.media[0];
        el.append(h("li", { dataset: { postId: post.post_id } }, h("a", { href: `#/p/${post.post_id}`, "aria-label": `Post by ${post.author.username}: ${post.caption || "photo"}` },
          photo(first, { alt: first.alt_text || `Photo by @${post.author.username}`, square: true, sizes: "(max-width: 640px) 33vw, 200px", eager: shown++ < 6 }),
          post.media.length > 1 ? h("span", { class: "multi" }, `${post.media.length} photos`) : null)));
      }
      cursor = page.next_cursor;
      done = !page.has_more;
      more.hidden = done;
      end.textContent = done && !shown ? "No posts you can see yet." : "";
    } catch (err) {
      end.textContent = errorText(err);
      return;
    } finally {
      loading = false;
      el.setAttribute("aria-busy", "false");
    }
    if (!done && nearEnd()) load();
  };
  more.addEventListener("click", load);
  let attached = false;
  const observer = new IntersectionObserver((entries) => {
    if (sentinel.isConnected) attached = true;
    else if (attached) return observer.disconnect();
    if (entries.some((e) => e.isIntersecting)) load();
  }, { rootMargin: `${PREFETCH_PX}px` });
  observer.observe(sentinel);
  load();
  return h("div", {}, el, sentinel, end, more);
}

/** Top and Recent, as two toggle buttons over one grid. */
function topRecent(base, what) {
  const holder = h("div", {});
  const buttons = [["top", "Top"], ["recent", "Recent"]].map(([order, title]) => h("button", { type: "button", "aria-pressed": String(order === "top"), onclick: (e) => {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b === e.currentTarget));
    holder.replaceChildren(postGrid(`${base}/${order}`, `${title} posts of ${what}`));
  } }, title));
  holder.append(postGrid(`${base}/top`, `Top posts of ${what}`));
  return [h("div", { class: "tabs", role: "group", "aria-label": "Order" }, buttons), holder];
}

export async function hashtagView(name) {
  const tag = await api("GET", `/hashtags/${encodeURIComponent(name)}`);
  return h("div", { class: "tag-page" },
    h("header", { class: "card page-head" }, h("h1", {}, `#${tag.name}`), h("p", { class: "count" }, plural(tag.post_count, "post", "posts"))),
    topRecent(`/hashtags/${encodeURIComponent(tag.name)}`, `#${tag.name}`));
}

export async function placeView(placeId) {
  const place = await api("GET", `/places/${placeId}`);
  return h("div", { class: "place-page" },
    h("header", { class: "card page-head" }, h("h1", {}, place.name),
      h("p", { class: "count" }, plural(place.post_count, "post", "posts"), " · ",
        h("span", { class: "muted" }, `${place.latitude.toFixed(2)}, ${place.longitude.toFixed(2)}`))),
    topRecent(`/places/${place.place_id}`, place.name));
}
