"""The photo URLs the API hands out: public and long-lived for public accounts' photos,
signed and expiring for private accounts' (common/signed_photo.py). One `PhotoUrls` per
process; `for_owner` picks the kind for one owner's media, with one expiry per answer so a
page's URLs share it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from common.photo import photo_path
from common.signed_photo import expiry_for, signed_path

# (volume id, key, cookie, rendition, format code or None for a negotiated URL) -> URL
UrlMaker = Callable[[int, int, int, int, int | None], str]


@dataclass(frozen=True, slots=True)
class PhotoUrls:
    base: str  # the router's public address, no trailing slash
    url_key: bytes | None  # None: this process cannot sign (then private photos get none)
    ttl_s: float
    step_s: int

    def public(self) -> UrlMaker:
        base = self.base

        def make(vid: int, key: int, cookie: int, rendition: int, fmt: int | None) -> str:
            return base + photo_path(vid, key, cookie, rendition, fmt)

        return make

    def signed(self, *, now: float | None = None) -> UrlMaker:
        """URLs that expire (all with the same expiry)."""
        key = self.url_key
        if key is None:
            raise RuntimeError("this API process holds no URL-signing key")
        expiry = expiry_for(
            time.time() if now is None else now, ttl_s=self.ttl_s, step_s=self.step_s
        )
        base = self.base

        def make(vid: int, photo_key: int, cookie: int, rendition: int, fmt: int | None) -> str:
            return base + signed_path(key, vid, photo_key, cookie, rendition, fmt, expiry=expiry)

        return make

    def for_owner(self, *, private: bool) -> UrlMaker:
        return self.signed() if private else self.public()
