"""Handing a volume's reads from Haystack to the cell, with no delete lost on the way.

The directory's side (directory/tiering.py, docs/api/directory.md):
- `begin` lists the cell's name node as a replica that is still copying: from then on every
  delete of the volume is delivered to the name node too, which records it as a tombstone
  in the key store (and destroys the key when it already exists). The directory refuses
  `begin` while a delete of the volume is still pending for a Haystack replica, so every
  earlier delete is already in the volume the migration reads.
- `switch` makes the name node the volume's only replica and releases the Haystack ones.

Between the two the migration runs (f4.cell), then `reconcile` applies every delete the
cell may have missed while it wrote keys: the key store's tombstones and the needles the
Haystack volume deleted since the migration planned. Tombstones are committed before the
name node looks for the index, and reconcile reads them after the index exists, so a
delete either finds the key or is found by reconcile.
"""

from __future__ import annotations

import json
from typing import Any, Final

import urllib3

from common.credentials import Credentials, Purpose
from f4 import index as index_file
from f4.blob import BlobId
from f4.block_store import BlockStore
from f4.errors import HandoverRefused
from f4.keystore import KeyStore
from f4.needle_source import NeedleSource

DIRECTORY_TIMEOUT_S: Final = 30.0  # a switch releases the Haystack replicas before it answers


class DirectoryLink:
    """The directory's f4 routes, for one name node (blocking: call from a thread)."""

    def __init__(self, url: str, node_id: str, credentials: Credentials) -> None:
        self.url = url.rstrip("/")
        self.node_id = node_id
        self._auth = credentials.header(Purpose.ADMIN)
        self._http = urllib3.PoolManager(
            num_pools=2, retries=False, timeout=urllib3.Timeout(total=DIRECTORY_TIMEOUT_S)
        )

    def _post(self, path: str) -> dict[str, Any]:
        try:
            resp = self._http.request(
                "POST",
                self.url + path,
                body=json.dumps({"node_id": self.node_id}).encode(),
                headers={"Authorization": self._auth, "Content-Type": "application/json"},
            )
        except urllib3.exceptions.HTTPError as e:
            raise HandoverRefused(f"the directory at {self.url} cannot be reached: {e}") from e
        try:
            doc = json.loads(resp.data)
        except ValueError:
            doc = {}
        if resp.status != 200:
            error = doc.get("error", {}) if isinstance(doc, dict) else {}
            raise HandoverRefused(
                f"the directory refused {path}: HTTP {resp.status} "
                f"{error.get('code', '')}: {error.get('message', '')}".rstrip(": "),
                code=str(error.get("code") or HandoverRefused.code),
            )
        if not isinstance(doc, dict):
            raise HandoverRefused(f"the directory answered {path} with {doc!r}")
        return doc

    def begin(self, volume: int) -> dict[str, Any]:
        return self._post(f"/volumes/{volume}/f4/begin")

    def switch(self, volume: int) -> dict[str, Any]:
        return self._post(f"/volumes/{volume}/f4/switch")

    def abort(self, volume: int) -> dict[str, Any]:
        return self._post(f"/volumes/{volume}/f4/abort")


def reconcile(store: BlockStore, keys: KeyStore, source: NeedleSource, volume: int) -> int:
    """Destroys the key of every blob of the volume's index that is deleted: tombstoned in
    the key store, or no longer live in `source` (the Haystack volume, opened after the
    migration wrote its index). Returns how many keys it destroyed."""
    idx = index_file.load(store, volume)
    live = {(r.key, r.alt_key) for r in source.live_needles()}
    doomed = {pair for pair in idx.entries if pair not in live}
    whole: set[int] = set()
    for key, alt in keys.tombstones(volume):
        if alt is None:
            whole.add(key)
        else:
            doomed.add((key, alt))
    doomed.update(pair for pair in idx.entries if pair[0] in whole)
    doomed &= set(idx.entries)
    if not doomed:
        return 0
    return keys.delete([BlobId(volume, k, a) for k, a in sorted(doomed)])
