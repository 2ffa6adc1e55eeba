from __future__ import annotations

from pathlib import Path

import pytest

from common import credentials
from common.credentials import SERVICE_GRANTS, CredentialError, Credentials, Purpose


def test_credentials_differ_by_secret_and_by_purpose() -> None:
    a = credentials.derive(b"s" * 32, Purpose.READ)
    assert a == credentials.derive(b"s" * 32, Purpose.READ)
    assert a != credentials.derive(b"t" * 32, Purpose.READ)
    tokens = {credentials.derive(b"s" * 32, p) for p in Purpose}
    assert len(tokens) == len(Purpose)
    assert len(a) == 64 and int(a, 16) >= 0


def test_a_header_proves_exactly_its_purpose() -> None:
    everything = Credentials.from_secret(b"k" * 32)
    for purpose in Purpose:
        header = everything.header(purpose)
        assert header.startswith("Pinhole-Internal ")
        assert everything.granted(header) == {purpose}
        assert everything.allows(header, purpose)
        assert not everything.allows(header, *(set(Purpose) - {purpose}))
    token = everything.tokens[Purpose.READ]
    assert everything.granted(None) == everything.granted("") == frozenset()
    assert everything.granted("Bearer " + token) == frozenset()
    assert everything.granted("Pinhole-Internal " + "0" * 64) == frozenset()
    other = Credentials.from_secret(b"j" * 32)
    assert not other.allows(everything.header(Purpose.READ), Purpose.READ)


def test_each_service_holds_only_its_grant() -> None:
    secret = b"g" * 32
    everything = Credentials.from_secret(secret)
    for service, grant in SERVICE_GRANTS.items():
        held = Credentials.for_service(secret, service)
        assert set(held.tokens) == grant.sends, service
        assert set(held.verifiers) == grant.accepts, service
        assert (held.url_key is not None) == grant.url_key, service
        assert (held.ticket_key is not None) == grant.ticket_key, service
        for purpose in set(Purpose) - grant.sends:
            with pytest.raises(CredentialError):
                held.header(purpose)
        for purpose in Purpose:
            # Verifiers are digests: holding one proves nothing, it only checks.
            assert held.allows(everything.header(purpose), purpose) == (purpose in grant.accepts)
            assert everything.tokens[purpose] not in held.to_json() or purpose in grant.sends
    router = Credentials.for_service(secret, "router")
    assert not router.holds(Purpose.WRITE) and not router.holds(Purpose.ADMIN)
    # f4 read tickets: signed by the name node, checked by the storage nodes; the readers
    # that redeem them (caches, routers) hold neither the key nor the blocks credential.
    ticket_holders = {s for s, g in SERVICE_GRANTS.items() if g.ticket_key}
    assert ticket_holders == {"f4-name", "f4-node"}
    assert Credentials.for_service(secret, "f4-name").ticket_key == credentials.ticket_key(secret)
    assert credentials.ticket_key(secret) not in (
        credentials.url_key(secret),
        *(bytes.fromhex(credentials.derive(secret, p)) for p in Purpose),
    )
    for reader in ("cache", "router"):
        held = Credentials.for_service(secret, reader)
        assert held.ticket_key is None and not held.holds(Purpose.BLOCKS)
    store = Credentials.for_service(secret, "store")
    assert store.holds(Purpose.NODE) and not store.holds(Purpose.READ)
    with pytest.raises(CredentialError, match="unknown service"):
        Credentials.for_service(secret, "nobody")


def test_credentials_files_round_trip_and_are_private(tmp_path: Path) -> None:
    held = Credentials.for_service(b"f" * 32, "cache")
    path = tmp_path / "cache.json"
    held.write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    back = Credentials.read(path)
    assert back.tokens == held.tokens and back.verifiers == held.verifiers
    assert back.url_key == held.url_key is None
    node = Credentials.for_service(b"f" * 32, "f4-node")
    node.write(path)
    assert Credentials.read(path).ticket_key == node.ticket_key is not None
    path.write_text("{}")
    with pytest.raises(CredentialError, match="not a pinhole credentials file"):
        Credentials.read(path)
    with pytest.raises(CredentialError, match="cannot read"):
        Credentials.read(tmp_path / "missing.json")


def test_wrong_headers_do_not_grow_the_memo() -> None:
    held = Credentials.for_service(b"m" * 32, "store")
    for i in range(10 * credentials.SEEN_HEADERS_MAX):
        assert not held.allows(f"Pinhole-Internal {i:064x}", Purpose.WRITE)
    assert len(held._seen) <= credentials.SEEN_HEADERS_MAX


def test_secret_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(credentials.SECRET_ENV, raising=False)
    with pytest.raises(credentials.SecretError, match="no cluster secret"):
        credentials.load_secret(secret_file=None, default_dir=tmp_path)
    path = credentials.ensure_secret_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    from_dir = credentials.load_secret(secret_file=None, default_dir=tmp_path)
    assert from_dir == path.read_bytes().strip() and len(from_dir) == 64
    assert credentials.ensure_secret_file(tmp_path) == path  # kept, not replaced
    assert path.read_bytes().strip() == from_dir
    monkeypatch.setenv(credentials.SECRET_ENV, "e" * 20)
    assert credentials.load_secret(secret_file=None, default_dir=tmp_path) == b"e" * 20
    other = tmp_path / "other"
    other.write_text("f" * 40)
    assert credentials.load_secret(secret_file=other, default_dir=tmp_path) == b"f" * 40
    monkeypatch.setenv(credentials.SECRET_ENV, "short")
    with pytest.raises(credentials.SecretError, match="shorter"):
        credentials.load_secret(secret_file=None, default_dir=tmp_path)
    other.write_text("tiny")
    with pytest.raises(credentials.SecretError, match="shorter"):
        credentials.load_secret(secret_file=other, default_dir=None)
