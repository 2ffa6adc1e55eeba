"""A Hypothesis state machine drives put / get / delete / compact / checkpoint / reopen /
power cut against a plain dict model."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from store import volume_read
from store.errors import NeedleNotFound
from store.volume_checking import verify
from store.volume_compact import compact
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume, open_volume
from tests.store.twin import TwinStorage

LIMITS = VolumeLimits(size_bytes_max=8 * 1024 * 1024, memtable_entries_max=8)
keys = st.integers(0, 12)
alts = st.sampled_from([0, 1, 2, 300])
cookies = st.integers(0, 3)


class VolumeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.storage = TwinStorage()
        self.volume = create_volume(self.storage, 1, LIMITS)
        self.model: dict[tuple[int, int], tuple[int, bytes]] = {}

    @rule(key=keys, alt=alts, cookie=cookies, data=st.binary(max_size=700))
    def put(self, key: int, alt: int, cookie: int, data: bytes) -> None:
        self.volume.put(key, alt, cookie, data).result()
        self.model[(key, alt)] = (cookie, data)

    @rule(key=keys, alt=alts)
    def delete_one(self, key: int, alt: int) -> None:
        n = self.volume.delete(key, alt).result().deleted
        assert n == (1 if (key, alt) in self.model else 0)
        self.model.pop((key, alt), None)

    @rule(key=keys)
    def delete_all_variants(self, key: int) -> None:
        n = self.volume.delete(key).result().deleted
        victims = [k for k in self.model if k[0] == key]
        assert n == len(victims)
        for k in victims:
            del self.model[k]

    @rule(key=keys, alt=alts, cookie=cookies)
    def get(self, key: int, alt: int, cookie: int) -> None:
        want = self.model.get((key, alt))
        if want is not None and want[0] == cookie:
            assert bytes(volume_read.read(self.volume, key, alt, cookie).data) == want[1]
        else:
            try:
                volume_read.read(self.volume, key, alt, cookie)
            except NeedleNotFound:
                pass
            else:
                raise AssertionError("served a needle that should answer 404")

    @rule()
    def compact(self) -> None:
        compact(self.volume)

    @rule()
    def checkpoint(self) -> None:
        self.volume.write_checkpoint()

    @rule()
    def reopen(self) -> None:
        self.volume.close()
        self.volume = open_volume(self.storage, 1, LIMITS)

    @rule(seed=st.integers(0, 2**16))
    def power_cut(self, seed: int) -> None:
        # Everything in the model was acknowledged, so it must all survive.
        self.volume.close(checkpoint=False)
        self.storage = self.storage.crash(random.Random(seed))
        self.volume = open_volume(self.storage, 1, LIMITS)
        assert verify(self.volume).ok

    @precondition(lambda self: len(self.model) > 0)
    @invariant()
    def live_counters_match(self) -> None:
        st = self.volume.statistics()
        assert st.needles_live == len(self.model)

    @invariant()
    def contents_match(self) -> None:
        for (key, alt), (cookie, data) in self.model.items():
            assert bytes(volume_read.read(self.volume, key, alt, cookie).data) == data

    def teardown(self) -> None:
        assert verify(self.volume).ok
        self.volume.close()


VolumeMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestVolumeMachine = VolumeMachine.TestCase
