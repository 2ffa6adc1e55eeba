"""Placement: pure functions, checked exhaustively over small clusters."""

from __future__ import annotations

import itertools

import pytest

from directory.placement import (
    Candidate,
    Placement,
    Unsatisfiable,
    loose_targets,
    parse_failure_domain,
    place,
    plan_balance,
    satisfies,
)

LOCAL = [
    Candidate("s1", "dc1/rack1/host1"),
    Candidate("s2", "dc1/rack1/host2"),
    Candidate("s3", "dc1/rack2/host3"),
    Candidate("s4", "dc1/rack2/host4"),
]


def by_id(cands: list[Candidate]) -> dict[str, Candidate]:
    return {c.node_id: c for c in cands}


def test_parse() -> None:
    assert Placement.parse("011").replica_count == 3
    assert Placement.parse("000").replica_count == 1
    assert str(Placement.parse("210")) == "210"
    for bad in ("01", "0111", "a11", "-11", "", "\u0660\u0661\u0661"):
        with pytest.raises(ValueError):
            Placement.parse(bad)
    assert parse_failure_domain("dc/r/h") == ("dc", "r", "h")
    for bad in ("dc/r", "dc/r/h/x", "dc//h", " dc/r/h"):
        with pytest.raises(ValueError):
            parse_failure_domain(bad)


def test_011_on_the_local_cluster() -> None:
    chosen = place(Placement.parse("011"), LOCAL)
    assert len(chosen) == 3
    nodes = [by_id(LOCAL)[n] for n in chosen]
    assert satisfies(Placement.parse("011"), nodes)
    assert len({n.host for n in nodes}) == 3
    assert len({n.rack for n in nodes}) == 2


def test_least_loaded_nodes_win() -> None:
    loaded = [
        Candidate(c.node_id, c.failure_domain, load)
        for c, load in zip(LOCAL, [5, 0, 9, 1], strict=True)
    ]
    # 001: two hosts in one rack: rack1 costs 5, rack2 costs 10.
    assert sorted(place(Placement.parse("001"), loaded)) == ["s1", "s2"]
    # 000: the least loaded node.
    assert place(Placement.parse("000"), loaded) == ("s2",)
    # 010: one node in each rack, least loaded of each.
    assert sorted(place(Placement.parse("010"), loaded)) == ["s2", "s4"]


def test_deterministic_on_ties() -> None:
    assert place(Placement.parse("011"), LOCAL) == place(Placement.parse("011"), LOCAL[::-1])


@pytest.mark.parametrize(
    ("policy", "cands"),
    [
        ("100", LOCAL),  # one DC only
        ("020", LOCAL),  # two racks only
        ("002", LOCAL),  # two hosts per rack only
        ("011", LOCAL[:2]),  # one rack only
        ("001", [Candidate("a", "d/r/h"), Candidate("b", "d/r/h")]),  # same host twice
        ("000", []),
    ],
)
def test_unsatisfiable(policy: str, cands: list[Candidate]) -> None:
    with pytest.raises(Unsatisfiable):
        place(Placement.parse(policy), cands)


def _brute_force_ok(policy: Placement, cands: list[Candidate]) -> bool:
    return any(
        satisfies(policy, list(combo))
        for combo in itertools.combinations(cands, policy.replica_count)
    )


def _brute_force_cost(policy: Placement, cands: list[Candidate]) -> int:
    return min(
        sum(c.load for c in combo)
        for combo in itertools.combinations(cands, policy.replica_count)
        if satisfies(policy, list(combo))
    )


def _topologies() -> list[list[Candidate]]:
    """Small clusters: up to 2 DCs x 2 racks x 2 hosts, some hosts holding two nodes, with
    varied loads."""
    out = []
    slots = [f"dc{d}/rack{r}/host{h}" for d in (1, 2) for r in (1, 2) for h in (1, 2)]
    for mask in range(1, 2 ** len(slots), 7):
        domains = [s for i, s in enumerate(slots) if mask >> i & 1]
        cands = [Candidate(f"n{i}", d, (i * 7) % 5) for i, d in enumerate(domains)]
        if len(domains) > 1:
            cands.append(Candidate("twin", domains[0], 0))  # a second node on one host
        out.append(cands)
    return out


@pytest.mark.parametrize(
    "policy_text", ["000", "001", "010", "100", "011", "110", "101", "111", "020", "002"]
)
def test_place_matches_brute_force(policy_text: str) -> None:
    """On every small topology: place succeeds exactly when some replica set satisfies the
    policy, its answer satisfies it, and no valid set costs less."""
    policy = Placement.parse(policy_text)
    for cands in _topologies():
        possible = _brute_force_ok(policy, cands)
        if not possible:
            with pytest.raises(Unsatisfiable):
                place(policy, cands)
            continue
        chosen = [by_id(cands)[n] for n in place(policy, cands)]
        assert satisfies(policy, chosen), (policy_text, cands, chosen)
        assert sum(c.load for c in chosen) == _brute_force_cost(policy, cands)


def test_keep_completes_an_existing_set() -> None:
    policy = Placement.parse("011")
    keep = [by_id(LOCAL)["s1"], by_id(LOCAL)["s3"]]
    chosen = place(policy, LOCAL, keep=keep)
    assert chosen[:2] == ("s1", "s3")
    assert chosen[2] in ("s2", "s4")
    # Kept replicas that break the policy (two in one other rack) make it unsatisfiable.
    bad_keep = [Candidate("a", "d/r1/h1"), Candidate("b", "d/r2/h1"), Candidate("c", "d/r2/h2")]
    with pytest.raises(Unsatisfiable):
        place(Placement.parse("010"), [], keep=bad_keep[:1] + bad_keep[1:])
    with pytest.raises(Unsatisfiable):
        place(policy, LOCAL, keep=[LOCAL[0], LOCAL[0]])


def test_loose_targets_spread_then_fill() -> None:
    keep = [by_id(LOCAL)["s1"]]
    assert loose_targets(1, LOCAL, keep=keep) == ("s3",)  # a new rack first
    assert loose_targets(3, LOCAL, keep=keep) == ("s3", "s2", "s4")
    assert loose_targets(5, LOCAL[:2], keep=keep) == ("s2",)  # no more nodes


def test_satisfies() -> None:
    policy = Placement.parse("011")
    n = by_id(LOCAL)
    assert satisfies(policy, [n["s1"], n["s2"], n["s3"]])
    assert not satisfies(policy, [n["s1"], n["s2"]])
    assert not satisfies(policy, [n["s1"], n["s2"], n["s3"], n["s4"]])
    assert not satisfies(Placement.parse("020"), [n["s1"], n["s2"], n["s3"]])
    assert satisfies(policy, [n["s3"], n["s4"], n["s1"]])


def test_balance_moves_until_even_and_keeps_placement() -> None:
    policy = Placement.parse("011")
    nodes = [Candidate(c.node_id, c.failure_domain) for c in LOCAL[:3]]
    volumes = {vid: ["s1", "s2", "s3"] for vid in range(1, 7)}
    assert (
        plan_balance(policy, nodes, volumes, targets_allowed={"s1", "s2", "s3"}, moves_max=100)
        == []
    )
    nodes.append(Candidate("s4", "dc1/rack2/host4"))
    moves = plan_balance(policy, nodes, volumes, targets_allowed={"s4"}, moves_max=100)
    assert moves and all(m.target == "s4" for m in moves)
    after = {vid: list(ids) for vid, ids in volumes.items()}
    for m in moves:
        after[m.volume_id][after[m.volume_id].index(m.source)] = m.target
    n = {c.node_id: c for c in nodes}
    assert all(satisfies(policy, [n[i] for i in ids]) for ids in after.values())
    loads = [sum(nid in ids for ids in after.values()) for nid in n]
    assert max(loads) - min(loads) <= 1 and len(moves) == 4  # 18 replicas: 5, 5, 4, 4
    capped = plan_balance(policy, nodes, volumes, targets_allowed={"s4"}, moves_max=1)
    assert len(capped) == 1


def test_balance_stops_when_no_move_keeps_placement() -> None:
    policy = Placement.parse("010")
    nodes = [Candidate("a", "d/r1/h1"), Candidate("b", "d/r2/h1"), Candidate("c", "d/r1/h2")]
    volumes = {1: ["a", "b"], 2: ["a", "b"], 3: ["a", "b"]}
    moves = plan_balance(policy, nodes, volumes, targets_allowed={"c"}, moves_max=10)
    # c can take a's place (same rack), never b's.
    assert [m.source for m in moves] == ["a"] and all(m.target == "c" for m in moves)
