// Captions and comments as text with #hashtags and @mentions turned into links, by the
// rules of social/text.py: a hashtag is # then word characters, a mention @ then a username,
// each at the start of the text or after a character that is not part of a word.

import { h } from "./dom.js";

const TOKENS = /(?<![\p{L}\p{N}_#])#([\p{L}\p{N}_]{1,100})|(?<![\p{L}\p{N}_@.])@([A-Za-z0-9._]{1,30})(?<!\.)/gu;

export function richText(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(TOKENS)) {
    out.push(text.slice(last, m.index));
    const [whole, tag, user] = m;
    const href = tag ? `#/tags/${encodeURIComponent(tag.toLowerCase())}` : `#/u/${encodeURIComponent(user.toLowerCase())}`;
    out.push(h("a", { href, class: tag ? "tag" : "mention" }, whole));
    last = m.index + whole.length;
  }
  out.push(text.slice(last));
  return out;
}
