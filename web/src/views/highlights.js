// Highlights on a profile (docs/api/stories.md): a row of named circles, each opening its
// stories in the story viewer (GET /users/<id>/highlights answers only what the API lets
// the viewer see). The owner makes one from their archived (and live) stories, renames
// it, or deletes it.

import { api } from "../api.js";
import { errorText, field, h, say } from "../dom.js";
import { photo } from "../media.js";
import { openViewer } from "./stories.js";

const HIGHLIGHTS_PAGE = 50;
const TITLE_CHARS_MAX = 30;

function cover(highlight) {
  const media = highlight.stories.find((s) => s.media)?.media;
  if (!media) return h("span", { class: "highlight-cover blank", "aria-hidden": "true" }, highlight.title[0]?.toUpperCase() || "?");
  const el = photo(media, { alt: "", square: true, sizes: "64px" });
  el.classList.add("highlight-cover");
  el.setAttribute("aria-hidden", "true");
  return el;
}

async function storyChoices(user) {
  const [archived, live] = await Promise.all([
    api("GET", "/stories/archive", { query: { limit: HIGHLIGHTS_PAGE } }),
    api("GET", `/users/${user.user_id}/stories`),
  ]);
  return [...live.stories.reverse(), ...archived.stories];
}

function editor(user, { highlight = null, done }) {
  const title = h("input", { name: "title", maxlength: TITLE_CHARS_MAX, required: true, value: highlight?.title });
  const picks = h("ul", { class: "highlight-picks", "aria-label": "Stories to keep" });
  const error = h("p", { class: "error", role: "alert" });
  const chosen = new Set((highlight?.stories || []).map((s) => s.story_id));
  let listed = false; // the choices have loaded: their boxes say which stories to keep
  const form = h("form", { class: "card highlight-editor", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const ids = [...picks.querySelectorAll("input:checked")].map((i) => i.value);
    try {
      if (highlight) await api("PATCH", `/highlights/${highlight.highlight_id}`, { body: listed ? { title: title.value, story_ids: ids } : { title: title.value } });
      else await api("POST", "/highlights", { body: { title: title.value, story_ids: ids } });
      say(highlight ? "Highlight saved" : "Highlight added");
      done();
    } catch (err) {
      error.textContent = errorText(err);
    }
  } },
    h("h2", {}, highlight ? `Edit “${highlight.title}”` : "New highlight"),
    field("Title", title),
    picks,
    error,
    h("div", { class: "profile-actions" },
      h("button", { type: "submit", class: "primary" }, highlight ? "Save highlight" : "Add highlight"),
      h("button", { type: "button", class: "secondary", onclick: () => done(false) }, "Cancel"),
      highlight ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete the highlight “${highlight.title}”? The stories stay in your archive.`)) return;
        try {
          await api("DELETE", `/highlights/${highlight.highlight_id}`);
          say("Highlight deleted");
          done();
        } catch (err) { error.textContent = errorText(err); }
      } }, "Delete highlight") : null));
  storyChoices(user).then((found) => {
    const seen = new Set();
    const items = [];
    for (const s of [...(highlight?.stories || []), ...found]) {
      if (seen.has(s.story_id) || !s.media) continue;
      seen.add(s.story_id);
      const box = h("input", { type: "checkbox", value: s.story_id, checked: chosen.has(s.story_id), id: `pick-${s.story_id}` });
      items.push(h("li", {}, h("label", { for: box.id, class: "pick" }, box,
        photo(s.media, { alt: `Story from ${new Date(s.created_at).toLocaleString()}`, square: true, sizes: "96px" }))));
    }
    picks.replaceChildren(...(items.length ? items : [h("li", {}, "No stories to keep yet: stories you post land in your archive.")]));
    listed = true;
  }, (err) => picks.replaceChildren(h("li", { class: "error" }, errorText(err))));
  return form;
}

export function highlightsRow(user, { mine }) {
  const row = h("ul", { class: "highlights", "aria-label": "Highlights" });
  const section = h("section", { class: "highlights-card" }, row);
  const load = async () => {
    let page;
    try {
      page = await api("GET", `/users/${user.user_id}/highlights`, { query: { limit: HIGHLIGHTS_PAGE } });
    } catch (err) {
      if (err.code === "private_account" || err.status === 404) return section.remove();
      return row.replaceChildren(h("li", { class: "error" }, errorText(err)));
    }
    const shown = page.highlights.filter((hl) => hl.stories.some((s) => s.media));
    const reels = shown.map((hl) => ({ user, title: hl.title, stories: hl.stories.filter((s) => s.media) }));
    row.replaceChildren(...shown.map((hl, i) => h("li", {},
      h("button", { type: "button", class: "highlight", "aria-label": `Highlight: ${hl.title}`, onclick: () => openViewer(reels, i, { markSeen: false }) },
        cover(hl), h("span", { class: "highlight-title", "aria-hidden": "true" }, hl.title)),
      mine ? h("button", { type: "button", class: "link highlight-edit", "aria-label": `Edit highlight ${hl.title}`, onclick: () => edit(hl) }, "Edit") : null)));
    if (mine) row.append(h("li", {}, h("button", { type: "button", class: "highlight new", "aria-label": "New highlight", onclick: () => edit(null) },
      h("span", { class: "highlight-cover blank", "aria-hidden": "true" }, "+"), h("span", { class: "highlight-title", "aria-hidden": "true" }, "New"))));
    if (!row.children.length) section.hidden = true;
  };
  let open = null;
  const edit = (highlight) => {
    open?.remove();
    open = editor(user, { highlight, done: (changed = true) => {
      open?.remove();
      open = null;
      if (changed) load();
    } });
    section.append(open);
    open.querySelector("input[name=title]").focus();
  };
  load();
  return section;
}
