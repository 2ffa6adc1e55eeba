"""The block store of a cell as its [f4] config describes it: nodes with a url are reached
over HTTP on their storage node process (HttpBlockStore), nodes without one are directories
under <cell_root>/blocks (LocalBlockStore); a cell may mix both.

Invariant: every call for a node goes to the one store that holds it, and `nodes()` keeps
the config's order (placement walks it), whatever the mix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from common.credentials import Credentials
from f4.block_store import BlockStore, BlockWriter, Buffer
from f4.config import F4Config
from f4.errors import BlockUnreachable, F4Error
from f4.http_block_store import HttpBlockStore
from f4.local_block_store import LocalBlockStore


class CellBlockStore(BlockStore, Protocol):
    """A BlockStore that also says whether a node is up and removes what killed writers
    left (what the cell's operator commands need)."""

    def node_up(self, node: str) -> bool: ...

    def clean_temporaries(self) -> int: ...


class MixedBlockStore:
    """Dispatches each node to the store serving it."""

    def __init__(self, order: Iterable[str], stores: Iterable[CellBlockStore]) -> None:
        self._order = list(order)
        self._stores = list(stores)
        self._of: dict[str, CellBlockStore] = {}
        for store in self._stores:
            for node in store.nodes():
                self._of[node] = store
        if set(self._order) != set(self._of):
            raise ValueError("every node needs exactly one store")

    def _store(self, node: str) -> CellBlockStore:
        store = self._of.get(node)
        if store is None:
            raise BlockUnreachable(f"node {node} is not in this cell")
        return store

    def nodes(self) -> list[str]:
        return list(self._order)

    def node_up(self, node: str) -> bool:
        return self._store(node).node_up(node)

    def put(self, node: str, name: str, pieces: Iterable[Buffer]) -> None:
        self._store(node).put(node, name, pieces)

    def open_writer(self, node: str, name: str) -> BlockWriter:
        return self._store(node).open_writer(node, name)

    def get_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        return self._store(node).get_range(node, name, offset, length)

    def get_checked_range(self, node: str, block: str, offset: int, length: int) -> bytes:
        return self._store(node).get_checked_range(node, block, offset, length)

    def get(self, node: str, name: str) -> bytes:
        return self._store(node).get(node, name)

    def exists(self, node: str, name: str) -> bool:
        return self._store(node).exists(node, name)

    def size(self, node: str, name: str) -> int:
        return self._store(node).size(node, name)

    def delete(self, node: str, name: str) -> None:
        self._store(node).delete(node, name)

    def list(self, node: str) -> list[str]:
        return self._store(node).list(node)

    def clean_temporaries(self) -> int:
        return sum(store.clean_temporaries() for store in self._stores)


def cell_block_store(config: F4Config, credentials: Credentials | None) -> CellBlockStore:
    """The cell's store: a LocalBlockStore when no node has a url (as before storage
    nodes), an HttpBlockStore when all have one, else both behind a MixedBlockStore.
    `credentials` must hold the blocks credential when a node has a url."""
    local = [n.name for n in config.nodes if not n.url]
    remote = {n.name: n.url for n in config.nodes if n.url}
    if not remote:
        return LocalBlockStore(config.blocks_dir, local)
    if credentials is None:
        raise F4Error("the cell's storage nodes need the cluster's blocks credential")
    http = HttpBlockStore(remote, credentials)
    if not local:
        return http
    return MixedBlockStore(
        [n.name for n in config.nodes], [LocalBlockStore(config.blocks_dir, local), http]
    )
