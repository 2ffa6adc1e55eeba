// A new post: photos uploaded with tus (resumable: a dropped connection retries from the
// offset the server acknowledged; a reload resumes from the fingerprint kept in
// localStorage), a progress bar, alt text per photo, a filter, a caption; then the post.

import * as tus from "tus-js-client";
import { api, authHeaders } from "../api.js";
import { errorText, field, h, say } from "../dom.js";

const FILTERS = ["", "clarendon", "gingham", "juno", "lark", "moon"];
const MEDIA_WAIT_S = 10;
const MEDIA_WAITS_MAX = 6;
const CHUNK_BYTES = 5 * 1024 * 1024;
// Retries after a dropped connection (ms); each resumes at the acknowledged offset.
const RETRY_DELAYS_MS = [0, 1000, 3000, 5000, 10000, 20000];

export function tusUpload(file, filterId, onProgress) {
  return new Promise((resolve, reject) => {
    let mediaId = null;
    const metadata = { filename: file.name, media_type: file.type.startsWith("video/") ? "video" : "image" };
    if (filterId) metadata.filter_id = filterId;
    const upload = new tus.Upload(file, {
      endpoint: "/api/v1/uploads",
      headers: authHeaders(),
      metadata,
      chunkSize: CHUNK_BYTES,
      retryDelays: RETRY_DELAYS_MS,
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => onProgress(sent, total),
      onAfterResponse: (_req, res) => {
        const id = res.getHeader("Pinhole-Media-Id");
        if (id) mediaId = id;
      },
      onError: (err) => {
        const body = err.originalResponse?.getBody?.();
        try {
          reject(new Error(JSON.parse(body).error.message));
        } catch {
          reject(err);
        }
      },
      onSuccess: () => (mediaId ? resolve(mediaId) : reject(new Error("the upload finished without a media id"))),
    });
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  });
}

export async function waitReady(mediaId) {
  for (let i = 0; i < MEDIA_WAITS_MAX; i++) {
    const doc = await api("GET", `/media/${mediaId}`, { query: { wait_s: MEDIA_WAIT_S } });
    if (doc.status !== "processing") return doc;
  }
  return null;
}

/** A post's place (docs/api/search.md): a name with both coordinates makes (or reuses) a
 * place; a name alone is only the post's location text, as the API takes no place without
 * coordinates. Throws when coordinates come without a name or only one is given. */
function placeOf(name, latitude, longitude) {
  if (latitude === "" && longitude === "") return null;
  if (!name) throw new Error("Give the place a name as well as its coordinates.");
  if (latitude === "" || longitude === "") throw new Error("Give both the latitude and the longitude, or neither.");
  return { name, latitude: Number(latitude), longitude: Number(longitude) };
}

export function uploadView() {
  const files = h("input", { type: "file", name: "files", accept: "image/jpeg,image/png,image/webp,image/heic,video/mp4,video/quicktime", multiple: true, required: true });
  const previews = h("div", { class: "previews" });
  const filter = h("select", { name: "filter" }, FILTERS.map((f) => h("option", { value: f }, f || "none")));
  const caption = h("textarea", { name: "caption", rows: 3, maxlength: 2200, placeholder: "Write a caption… #hashtags and @mentions link" });
  const location_ = h("input", { name: "location", maxlength: 100 });
  const latitude = h("input", { name: "latitude", type: "number", min: -90, max: 90, step: "any", inputmode: "decimal" });
  const longitude = h("input", { name: "longitude", type: "number", min: -180, max: 180, step: "any", inputmode: "decimal" });
  const progress = h("progress", { max: 100, value: 0, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "progress-text", "aria-live": "polite" });
  const progressRow = h("div", { class: "progress", hidden: true }, progress, progressText);
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Share");
  let alts = [];
  const paintPreviews = () => {
    previews.replaceChildren();
    alts = [...files.files].map((file, i) => {
      const alt = h("input", { name: `alt-${i}`, maxlength: 500, placeholder: "Describe the photo for people who can't see it" });
      const url = URL.createObjectURL(file);
      const img = file.type.startsWith("image/")
        ? h("img", { src: url, alt: `Preview of ${file.name}`, class: `preview filter-${filter.value || "none"}` })
        : h("video", { src: url, class: "preview", muted: true, "aria-label": `Preview of ${file.name}` });
      previews.append(h("figure", {}, img, field(`Alt text for ${file.name}`, alt)));
      return alt;
    });
  };
  files.addEventListener("change", paintPreviews);
  filter.addEventListener("change", () => {
    for (const img of previews.querySelectorAll("img.preview")) img.className = `preview filter-${filter.value || "none"}`;
  });
  const form = h("form", { class: "card upload", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const chosen = [...files.files];
    if (!chosen.length) return;
    let place;
    try {
      place = placeOf(location_.value.trim(), latitude.value, longitude.value);
    } catch (err) {
      error.textContent = errorText(err);
      return;
    }
    submit.disabled = true;
    progressRow.hidden = false;
    try {
      const total = chosen.reduce((n, f) => n + f.size, 0);
      let before = 0;
      const ids = [];
      for (const [i, file] of chosen.entries()) {
        const id = await tusUpload(file, file.type.startsWith("image/") ? filter.value : "", (sent) => {
          progress.value = Math.round(((before + sent) / total) * 100);
          progressText.textContent = `Uploading ${i + 1} of ${chosen.length}: ${progress.value}%`;
        });
        before += file.size;
        ids.push(id);
      }
      progressText.textContent = "Processing…";
      for (const id of ids) {
        const doc = await waitReady(id);
        if (doc && doc.status !== "ready") throw new Error(`a photo could not be processed (${doc.status})`);
      }
      const body = { media_ids: ids, caption: caption.value, alt_text: alts.map((a) => a.value || null) };
      if (place) body.place = place;
      else if (location_.value.trim()) body.location = location_.value.trim();
      const post = await api("POST", "/posts", { body });
      progressText.textContent = "Shared.";
      say("Your post is shared");
      location.hash = `#/p/${post.post_id}`;
    } catch (err) {
      error.textContent = errorText(err);
    } finally {
      submit.disabled = false;
    }
  } },
    h("h1", {}, "New post"),
    field("Photos or a video (several make a carousel)", files),
    previews,
    field("Filter", filter),
    field("Caption", caption),
    h("fieldset", { class: "place-fields" },
      h("legend", {}, "Place (optional)"),
      field("Place name", location_),
      h("p", { class: "hint" }, "With its coordinates, the post shows on the place's page; without, the name is shown as text."),
      h("div", { class: "coords" }, field("Latitude", latitude), field("Longitude", longitude))),
    progressRow,
    error,
    submit);
  return form;
}
