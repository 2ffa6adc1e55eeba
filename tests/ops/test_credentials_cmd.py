"""`pinhole credentials ROLE --out FILE`: a role's credentials file for a service on another
host, from the cluster secret: the role's grant and nothing more, mode 0600, an existing
file kept unless --force, bad input a one-line exit 2."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

from common import credentials
from common.credentials import Credentials, Purpose
from ops.join_cluster import role_of
from tests.up_cluster import pinhole


def _secret(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "cluster.secret"
    path.write_text(os.urandom(32).hex())
    path.chmod(0o600)
    return path, credentials.load_secret(secret_file=path, default_dir=None)


def test_a_store_file_holds_the_store_grant_only(tmp_path: Path) -> None:
    secret_file, secret = _secret(tmp_path)
    out = tmp_path / "store.json"
    p = pinhole("credentials", "store", "--out", out, "--secret-file", secret_file, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"store credentials written to {out}"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = Credentials.read(out)
    assert written == Credentials.for_service(secret, "store")
    # A store sends only `node`: the file cannot administer the cluster or read blocks.
    assert set(written.tokens) == {Purpose.NODE}
    assert secret.hex() not in out.read_text()


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    secret_file, secret = _secret(tmp_path)
    out = tmp_path / "router.json"
    out.write_text("keep me")
    args = ("credentials", "router", "--out", out, "--secret-file", secret_file)
    p = pinhole(*args, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "exists" in p.stderr and out.read_text() == "keep me"
    p = pinhole(*args, "--force", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert Credentials.read(out) == Credentials.for_service(secret, "router")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    p = pinhole(
        "credentials", "api", "--out", out, "--secret-file", tmp_path / "none", cwd=tmp_path
    )
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    p = pinhole("credentials", "api", "--out", tmp_path / "no" / "dir.json", cwd=tmp_path)
    assert p.returncode == 2 and "not a directory" in p.stderr
    assert not out.exists()


def test_each_role_file_names_its_role_with_or_without_the_ticket_key() -> None:
    secret = b"q" * 32
    for role in credentials.SERVICE_GRANTS:
        held = Credentials.for_service(secret, role)
        assert role_of(held) == role
        # A file written before f4 read tickets has no ticket key: still its role (the
        # process then neither signs nor takes tickets; reads go through the name node).
        assert role_of(replace(held, ticket_key=None)) == role
    cache = Credentials.for_service(secret, "cache")
    assert role_of(replace(cache, ticket_key=credentials.ticket_key(secret))) is None
