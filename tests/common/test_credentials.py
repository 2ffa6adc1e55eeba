from __future__ import annotations

from pathlib import Path

import pytest

from common import credentials


def test_credentials_differ_by_secret_and_by_purpose() -> None:
    a = credentials.derive(b"s" * 32, "p1")
    assert a == credentials.derive(b"s" * 32, "p1")
    assert a != credentials.derive(b"t" * 32, "p1")
    assert a != credentials.derive(b"s" * 32, "p2")
    assert len(a) == 64 and int(a, 16) >= 0


def test_authorization_header_round_trip() -> None:
    secret = b"k" * 32
    header = credentials.authorization_header(secret)
    expected = credentials.derive(secret, credentials.STORE_INTERNAL)
    assert header.startswith("Pinhole-Internal ")
    assert credentials.check_authorization(header, expected)
    assert not credentials.check_authorization(None, expected)
    assert not credentials.check_authorization("Bearer " + expected, expected)
    assert not credentials.check_authorization("Pinhole-Internal " + "0" * 64, expected)


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
