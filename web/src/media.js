// A photo as <picture>: a source per format (AVIF, WebP, JPEG) whose srcset spans the
// variant ladder (320, 640, 1080, or the square crops), so the browser picks format and
// size; a blurhash painted on a canvas underneath until the photo has loaded.

import { decode } from "blurhash";
import { h } from "./dom.js";

const LADDER = ["150", "320", "640", "1080"];
const FORMATS = [
  ["avif", "image/avif"],
  ["webp", "image/webp"],
];
const BLURHASH_PX = 32;

// One candidate per width: a small photo's larger rungs repeat its own size (never upscaled).
function srcset(variants, names, format) {
  const widths = new Set();
  const out = [];
  for (const n of names) {
    const v = variants[n];
    if (!v?.formats?.[format] || widths.has(v.width)) continue;
    widths.add(v.width);
    out.push(`${v.formats[format]} ${v.width}w`);
  }
  return out.join(", ");
}

function placeholder(hash, width, height) {
  if (!hash) return null;
  try {
    const canvas = h("canvas", { class: "blur", width: BLURHASH_PX, height: BLURHASH_PX, "aria-hidden": "true" });
    const pixels = decode(hash, BLURHASH_PX, BLURHASH_PX);
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(BLURHASH_PX, BLURHASH_PX);
    image.data.set(pixels);
    ctx.putImageData(image, 0, 0);
    return canvas;
  } catch {
    return null;
  }
}

// `media`: a post's media document; `square`: the grid's centre crops; `sizes`: the CSS
// width the photo takes.
export function photo(media, { alt, square = false, sizes = "(max-width: 640px) 100vw, 600px", eager = false } = {}) {
  const variants = media.variants || {};
  const names = LADDER.map((n) => (square ? `${n}_square` : n)).filter((n) => variants[n]);
  const text = alt || "Photo";
  const ratio = square ? "1 / 1" : media.width && media.height ? `${media.width} / ${media.height}` : "1 / 1";
  const frame = h("div", { class: square ? "photo square" : "photo" });
  frame.style.aspectRatio = ratio;
  const blur = placeholder(media.placeholder, media.width, media.height);
  if (blur) frame.append(blur);
  if (media.media_type === "video" && media.urls?.hls) {
    const poster = variants.poster?.formats?.jpeg || media.urls.poster;
    frame.append(h("video", { controls: true, preload: "none", poster, src: media.urls.hls, "aria-label": text }));
    return frame;
  }
  if (!names.length) {
    frame.append(h("div", { class: "processing", role: "img", "aria-label": `${text} (processing)` }, "processing…"));
    return frame;
  }
  const largest = variants[names[names.length - 1]];
  const img = h("img", {
    alt: text,
    src: largest.formats.jpeg || Object.values(largest.formats)[0],
    srcset: srcset(variants, names, "jpeg"),
    sizes,
    width: largest.width,
    height: largest.height,
    loading: eager ? "eager" : "lazy",
    decoding: "async",
  });
  img.addEventListener("load", () => frame.classList.add("loaded"));
  const picture = h(
    "picture",
    {},
    FORMATS.map(([format, type]) => {
      const set = srcset(variants, names, format);
      return set ? h("source", { type, srcset: set, sizes }) : null;
    }),
    img,
  );
  frame.append(picture);
  return frame;
}

export function avatar(user, size = 32) {
  const label = `${user.username}'s profile picture`;
  if (user.profile_pic_url) {
    return h("img", { class: "avatar", src: user.profile_pic_url, alt: label, width: size, height: size });
  }
  const letter = (user.username || "?")[0].toUpperCase();
  const el = h("span", { class: "avatar blank", role: "img", "aria-label": label }, letter);
  el.style.width = el.style.height = `${size}px`;
  return el;
}
