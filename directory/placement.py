"""Replica placement over failure domains: pure functions, no I/O.

A store node sits in a failure domain "dc/rack/host". A placement policy is SeaweedFS's
"xyz": a logical volume has one main replica, x more in x *other* datacenters, y more in y
other racks of the main replica's datacenter, and z more on z other hosts of the main
replica's rack: 1+x+y+z replicas, each in its own (dc, rack, host).

`place` searches every (main dc, main rack) pair and fills each slot with the least-loaded
node (load = replicas it holds; ties broken by node id, so the answer is deterministic),
keeping the nodes given in `keep` (replicas that already exist). The pair with the lowest
total load of the new picks wins. It raises Unsatisfiable when no pair works: the caller
decides whether to refuse (new volumes) or to fall back to `loose_targets` (re-replication
keeps data safe before it keeps the policy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class Unsatisfiable(ValueError):
    """No set of nodes among the candidates meets the placement policy."""


@dataclass(frozen=True, slots=True)
class Placement:
    other_dcs: int
    other_racks: int
    other_hosts: int

    @classmethod
    def parse(cls, text: str) -> Placement:
        if len(text) != 3 or not text.isascii() or not text.isdigit():
            raise ValueError(f"placement must be three digits 'xyz' like '011', not {text!r}")
        x, y, z = (int(c) for c in text)
        return cls(x, y, z)

    @property
    def replica_count(self) -> int:
        return 1 + self.other_dcs + self.other_racks + self.other_hosts

    def __str__(self) -> str:
        return f"{self.other_dcs}{self.other_racks}{self.other_hosts}"


def parse_failure_domain(text: str) -> tuple[str, str, str]:
    """(dc, rack, host) of "dc/rack/host"; ValueError for anything else."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p and p.strip() == p for p in parts):
        raise ValueError(f"failure_domain must be 'dc/rack/host', not {text!r}")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class Candidate:
    node_id: str
    failure_domain: str
    load: int = 0

    @property
    def dc(self) -> str:
        return parse_failure_domain(self.failure_domain)[0]

    @property
    def rack(self) -> str:
        return parse_failure_domain(self.failure_domain)[1]

    @property
    def host(self) -> str:
        return parse_failure_domain(self.failure_domain)[2]


def _rank(c: Candidate) -> tuple[int, str]:
    return (c.load, c.node_id)


def _best_per(nodes: Iterable[Candidate], key: str, used: set[str]) -> list[Candidate]:
    """The least-loaded node of each distinct `key` value (dc, rack or host) not in `used`,
    least loaded first."""
    best: dict[str, Candidate] = {}
    for n in nodes:
        k = getattr(n, key)
        if k in used:
            continue
        if k not in best or _rank(n) < _rank(best[k]):
            best[k] = n
    return sorted(best.values(), key=_rank)


def _place_in(
    policy: Placement,
    dc: str,
    rack: str,
    candidates: Sequence[Candidate],
    keep: Sequence[Candidate],
) -> list[Candidate] | None:
    """The cheapest replica set whose main replica is in (dc, rack), or None."""
    in_rack = [k for k in keep if k.dc == dc and k.rack == rack]
    in_dc = [k for k in keep if k.dc == dc and k.rack != rack]
    elsewhere = [k for k in keep if k.dc != dc]
    # Kept replicas must already respect the distinctness of their slot kind.
    hosts = {k.host for k in in_rack}
    racks = {k.rack for k in in_dc}
    dcs = {k.dc for k in elsewhere}
    if len(hosts) != len(in_rack) or len(racks) != len(in_dc) or len(dcs) != len(elsewhere):
        return None
    need_hosts = policy.other_hosts + 1 - len(in_rack)
    need_racks = policy.other_racks - len(in_dc)
    need_dcs = policy.other_dcs - len(elsewhere)
    if need_hosts < 0 or need_racks < 0 or need_dcs < 0:
        return None
    pool = [c for c in candidates if c.dc == dc and c.rack == rack]
    picks_hosts = _best_per(pool, "host", hosts)[:need_hosts]
    pool = [c for c in candidates if c.dc == dc and c.rack != rack]
    picks_racks = _best_per(pool, "rack", racks)[:need_racks]
    pool = [c for c in candidates if c.dc != dc]
    picks_dcs = _best_per(pool, "dc", dcs)[:need_dcs]
    if (len(picks_hosts), len(picks_racks), len(picks_dcs)) != (need_hosts, need_racks, need_dcs):
        return None
    return [*keep, *picks_hosts, *picks_racks, *picks_dcs]


def place(
    policy: Placement,
    candidates: Sequence[Candidate],
    *,
    keep: Sequence[Candidate] = (),
) -> tuple[str, ...]:
    """Node ids of a full replica set meeting `policy`: the `keep` nodes first (in their
    order), then the new picks among `candidates`, least-loaded choice. Raises Unsatisfiable."""
    kept_ids = {k.node_id for k in keep}
    if len(kept_ids) != len(keep):
        raise Unsatisfiable("a node is listed twice among the kept replicas")
    if len(keep) > policy.replica_count:
        raise Unsatisfiable(f"{len(keep)} replicas exceed the {policy.replica_count} of {policy}")
    pool = [c for c in candidates if c.node_id not in kept_ids]
    seen: set[str] = set()
    unique: list[Candidate] = []
    for c in pool:
        if c.node_id not in seen:
            seen.add(c.node_id)
            unique.append(c)
    mains = sorted({(n.dc, n.rack) for n in (*keep, *unique)})
    best: tuple[int, tuple[str, ...]] | None = None
    for dc, rack in mains:
        chosen = _place_in(policy, dc, rack, unique, keep)
        if chosen is None:
            continue
        new = chosen[len(keep) :]
        score = (sum(c.load for c in new), tuple(c.node_id for c in chosen))
        if best is None or score < best:
            best = score
    if best is None:
        raise Unsatisfiable(
            f"placement {policy} needs {policy.replica_count} replicas: {policy.other_dcs} "
            f"other DCs, {policy.other_racks} other racks, {policy.other_hosts} other hosts; "
            f"the {len(unique)} candidate nodes cannot provide them"
        )
    return best[1]


def satisfies(policy: Placement, replicas: Sequence[Candidate]) -> bool:
    """True when `replicas` is exactly a replica set meeting `policy`."""
    if len(replicas) != policy.replica_count:
        return False
    try:
        place(policy, (), keep=replicas)
    except Unsatisfiable:
        return False
    return True


def loose_targets(
    count: int, candidates: Sequence[Candidate], *, keep: Sequence[Candidate] = ()
) -> tuple[str, ...]:
    """Up to `count` node ids not in `keep`, spreading over failure domains the kept
    replicas do not use (new dc, then new rack, then new host), least loaded first. For
    re-replication when the policy cannot be met: more copies beat no copies."""
    kept_ids = {k.node_id for k in keep}
    chosen: list[Candidate] = list(keep)
    picks: list[str] = []
    pool = [c for c in candidates if c.node_id not in kept_ids]
    while len(picks) < count and pool:
        dcs = {c.dc for c in chosen}
        racks = {(c.dc, c.rack) for c in chosen}
        hosts = {(c.dc, c.rack, c.host) for c in chosen}

        best = min(pool, key=lambda c: _spread(c, dcs, racks, hosts))
        pool = [c for c in pool if c.node_id != best.node_id]
        chosen.append(best)
        picks.append(best.node_id)
    return tuple(picks)


def _spread(
    c: Candidate, dcs: set[str], racks: set[tuple[str, str]], hosts: set[tuple[str, str, str]]
) -> tuple[int, int, str]:
    if c.dc not in dcs:
        newness = 0
    elif (c.dc, c.rack) not in racks:
        newness = 1
    elif (c.dc, c.rack, c.host) not in hosts:
        newness = 2
    else:
        newness = 3
    return (newness, c.load, c.node_id)


@dataclass(frozen=True, slots=True)
class Move:
    volume_id: int
    source: str
    target: str


def plan_balance(
    policy: Placement,
    nodes: Sequence[Candidate],
    volumes: Mapping[int, Sequence[str]],
    *,
    targets_allowed: set[str],
    moves_max: int,
) -> list[Move]:
    """Moves of one replica each, from the most loaded of `nodes` to the least loaded,
    until replica counts differ by at most 1 or no move keeps the placement (a volume that
    already misses the policy may move anyway: it cannot get worse by the move's own rule).
    `volumes` maps a volume id to its replica node ids; only `nodes` count and move."""
    by_id = {n.node_id: n for n in nodes}
    load = {n.node_id: 0 for n in nodes}
    members: dict[int, list[str]] = {}
    for vid, replica_ids in volumes.items():
        members[vid] = list(replica_ids)
        for nid in replica_ids:
            if nid in load:
                load[nid] += 1
    holdings: dict[str, set[int]] = defaultdict(set)
    for vid, replica_ids in members.items():
        for nid in replica_ids:
            holdings[nid].add(vid)
    moves: list[Move] = []
    while len(moves) < moves_max:
        move = _one_balance_move(policy, by_id, load, members, holdings, targets_allowed)
        if move is None:
            break
        moves.append(move)
        load[move.source] -= 1
        load[move.target] += 1
        ids = members[move.volume_id]
        ids[ids.index(move.source)] = move.target
        holdings[move.source].discard(move.volume_id)
        holdings[move.target].add(move.volume_id)
    return moves


def _one_balance_move(
    policy: Placement,
    by_id: Mapping[str, Candidate],
    load: Mapping[str, int],
    members: Mapping[int, list[str]],
    holdings: Mapping[str, set[int]],
    targets_allowed: set[str],
) -> Move | None:
    descending = sorted(load, key=lambda n: (-load[n], n))
    ascending = sorted((n for n in load if n in targets_allowed), key=lambda n: (load[n], n))
    for src in descending:
        for dst in ascending:
            if load[src] - load[dst] <= 1:
                break
            for vid in sorted(holdings.get(src, ())):
                ids = members[vid]
                if dst in ids or any(n not in by_id for n in ids):
                    continue
                before = [by_id[n] for n in ids]
                after = [by_id[dst] if n == src else by_id[n] for n in ids]
                if satisfies(policy, after) or not satisfies(policy, before):
                    return Move(vid, src, dst)
    return None
