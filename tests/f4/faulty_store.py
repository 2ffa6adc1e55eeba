"""A LocalBlockStore whose writes of chosen objects fail, as a storage node that went away
in the middle of a migration does (BlockUnreachable). Tests only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from f4.block_store import Buffer
from f4.errors import BlockUnreachable
from f4.local_block_store import LocalBlockStore, LocalBlockWriter


@dataclass
class FaultyStore:
    """`fail_writes[name] = n`: the n-th write (0 first) to `name`'s writer fails, before any
    byte of it is written; `fail_commits`: those writers' commits fail and their uploads
    are gone; `fail_puts`: putting those objects whole fails. `failed` lists what
    failed, in order."""

    inner: LocalBlockStore
    fail_writes: dict[str, int] = field(default_factory=dict)
    fail_commits: set[str] = field(default_factory=set)
    fail_puts: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)

    def _fail(self, what: str) -> BlockUnreachable:
        self.failed.append(what)
        return BlockUnreachable(f"injected: {what}")

    def nodes(self) -> list[str]:
        return self.inner.nodes()

    def put(self, node: str, name: str, pieces: Iterable[Buffer]) -> None:
        if name in self.fail_puts:
            raise self._fail(f"put {name}")
        self.inner.put(node, name, pieces)

    def open_writer(self, node: str, name: str) -> _FaultyWriter:
        return _FaultyWriter(self, name, self.inner.open_writer(node, name))

    def get_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(node, name, offset, length)

    def get(self, node: str, name: str) -> bytes:
        return self.inner.get(node, name)

    def exists(self, node: str, name: str) -> bool:
        return self.inner.exists(node, name)

    def size(self, node: str, name: str) -> int:
        return self.inner.size(node, name)

    def delete(self, node: str, name: str) -> None:
        self.inner.delete(node, name)

    def list(self, node: str) -> list[str]:
        return self.inner.list(node)


class _FaultyWriter:
    def __init__(self, store: FaultyStore, name: str, inner: LocalBlockWriter) -> None:
        self._store = store
        self._name = name
        self._inner = inner
        self._writes = 0

    def write(self, data: Buffer) -> None:
        n = self._writes
        self._writes += 1
        if self._store.fail_writes.get(self._name) == n:
            raise self._store._fail(f"write {n} of {self._name}")
        self._inner.write(data)

    def commit(self) -> None:
        if self._name in self._store.fail_commits:
            self._inner.abort()  # the node lost the upload with its temporary
            raise self._store._fail(f"commit {self._name}")
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()
