"""Internal credentials: one per purpose, derived from the cluster secret, handed to each
service only for what it does (docs/operations/security.md).

Every pinhole cluster has one secret (a file, or an environment variable) that only the
operator's tools read whole. From it each purpose gets its own token, the hex HMAC-SHA256 of
the purpose's name under the secret:

| purpose   | what a request carrying it may do                                              |
|-----------|--------------------------------------------------------------------------------|
| `read`    | read needles (store, cache; originals and cookie-less reads included), look up  |
|           | volumes and cache nodes at the directory, report bad copies for repair          |
| `write`   | write and delete needles, invalidate cache entries, list writable volumes,      |
|           | record deletes, report a failed write                                           |
| `node`    | heartbeat (a node joins the cluster), export volume bytes to a peer, report     |
|           | scrubber findings                                                               |
| `admin`   | everything an operator does: volume administration, topology, status, plans     |
| `metrics` | read /metrics                                                                   |
| `blocks`  | read, write and delete raw f4 blocks at an f4 storage node                      |

A service holds the tokens it sends and, for the purposes it accepts, only their SHA-256
digests (verifiers): a store node can check a write credential but cannot make one. Signed
photo URLs use a key of their own (`url_key`), held by the API (which signs) and the routers
(which check); f4 read tickets another (`ticket_key`, common/read_ticket.py), held by the f4
name node (which signs) and the f4 storage nodes (which check). `pinhole up` writes one
credentials file per service (`SERVICE_GRANTS`); tests and single-process tools derive
everything from the secret (`Credentials.from_secret`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SECRET_ENV: Final = "PINHOLE_CLUSTER_SECRET"
SECRET_FILE_NAME: Final = "cluster.secret"
SECRET_BYTES_MIN: Final = 16

AUTH_SCHEME: Final = "Pinhole-Internal"
# Distinct Authorization values remembered per holder with what they grant, so checking a
# header costs one dict lookup after its first use (a router sends the same one every time).
SEEN_HEADERS_MAX: Final = 64
CREDENTIALS_FILE_VERSION: Final = 1


class Purpose(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    NODE = "node"
    ADMIN = "admin"
    METRICS = "metrics"
    BLOCKS = "blocks"


# The derivation labels are part of the tokens: changing one invalidates its credentials.
_LABELS: Final[Mapping[Purpose, str]] = {p: f"pinhole/{p.value}/v1" for p in Purpose}
URL_KEY_LABEL: Final = "pinhole/photo-url-signing/v1"
TICKET_KEY_LABEL: Final = "pinhole/f4-read-ticket/v1"

ALL_PURPOSES: Final = frozenset(Purpose)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one kind of service holds: the purposes it sends, the ones it accepts, and
    whether it holds the URL-signing key and the f4 read-ticket key."""

    sends: frozenset[Purpose]
    accepts: frozenset[Purpose]
    url_key: bool = False
    ticket_key: bool = False


def _grant(
    sends: Iterable[Purpose],
    accepts: Iterable[Purpose],
    *,
    url_key: bool = False,
    ticket_key: bool = False,
) -> Grant:
    return Grant(frozenset(sends), frozenset(accepts), url_key, ticket_key)


R, W, N, A, M = Purpose.READ, Purpose.WRITE, Purpose.NODE, Purpose.ADMIN, Purpose.METRICS
B = Purpose.BLOCKS
# What the Haystack side's control plane and stores accept: every purpose but raw f4 block
# access, which only f4 storage nodes take.
HAYSTACK_PURPOSES: Final = frozenset((R, W, N, A, M))

# Each service of a cluster and what it needs; nothing more.
SERVICE_GRANTS: Final[Mapping[str, Grant]] = {
    # The control plane delivers deletes and repairs (read + write) and orders volumes
    # created and removed (admin); it accepts every purpose.
    "directory": _grant((R, W, A), HAYSTACK_PURPOSES),
    # A store heartbeats, pulls volume bytes from peers and reports scrubber findings (node).
    "store": _grant((N,), HAYSTACK_PURPOSES),
    # A cache reads stores and heartbeats; it serves routers (read) and takes invalidations.
    "cache": _grant((R, N), (R, W, A, M)),
    # A router reads caches and stores and checks signed URLs; workers read originals
    # through it with their read credential.
    "router": _grant((R,), (R, A, M), url_key=True),
    # The API writes originals, streams an original to its owner, signs private URLs; it
    # serves its /metrics.
    "api": _grant((R, W), (A, M), url_key=True),
    # A worker reads originals and writes variants; it serves its /metrics.
    "worker": _grant((R, W), (A, M)),
    # An f4 storage node serves raw blocks (blocks) and its status; it calls nobody. It
    # checks read tickets (one range of one block each) with the ticket key.
    "f4-node": _grant((), (B, A, M), ticket_key=True),
    # The f4 name node reaches blocks on storage nodes (blocks) and heartbeats (node); it
    # serves blob reads and deletes (read, write) and its status, and signs read tickets.
    "f4-name": _grant((B, N), (R, W, A, M), ticket_key=True),
}


class CredentialError(ValueError):
    """A credential this holder does not have, or a file that is not a credentials file."""


def derive(secret: bytes, purpose: Purpose) -> str:
    """The token of `purpose`: hex HMAC-SHA256 of its label under the cluster secret."""
    return hmac.new(secret, _LABELS[purpose].encode(), hashlib.sha256).hexdigest()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Credentials:
    """The credentials one process holds. Immutable but for a small memo of checked headers.

    tokens: the purposes this holder may send, with their tokens.
    verifiers: for each purpose it accepts, the SHA-256 of that purpose's token.
    url_key: the key of signed photo URLs (32 bytes), or None.
    ticket_key: the key of f4 read tickets (32 bytes), or None.
    """

    tokens: Mapping[Purpose, str]
    verifiers: Mapping[Purpose, bytes]
    url_key: bytes | None = None
    ticket_key: bytes | None = None
    _seen: dict[str, frozenset[Purpose]] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    # -- making them ---------------------------------------------------------------------

    @classmethod
    def from_secret(cls, secret: bytes) -> Credentials:
        """Everything: the operator's tools, tests and single-process embeddings."""
        return cls.for_grant(
            secret, _grant(ALL_PURPOSES, ALL_PURPOSES, url_key=True, ticket_key=True)
        )

    @classmethod
    def for_service(cls, secret: bytes, service: str) -> Credentials:
        """What `service` (a key of SERVICE_GRANTS) needs and nothing more."""
        grant = SERVICE_GRANTS.get(service)
        if grant is None:
            raise CredentialError(f"unknown service {service!r}")
        return cls.for_grant(secret, grant)

    @classmethod
    def for_grant(cls, secret: bytes, grant: Grant) -> Credentials:
        return cls(
            tokens={p: derive(secret, p) for p in sorted(grant.sends)},
            verifiers={p: _digest(derive(secret, p)) for p in sorted(grant.accepts)},
            url_key=url_key(secret) if grant.url_key else None,
            ticket_key=ticket_key(secret) if grant.ticket_key else None,
        )

    # -- sending ---------------------------------------------------------------------------

    def header(self, purpose: Purpose) -> str:
        """The Authorization value for `purpose`; CredentialError when not held."""
        token = self.tokens.get(purpose)
        if token is None:
            raise CredentialError(f"this process holds no {purpose.value} credential")
        return f"{AUTH_SCHEME} {token}"

    def holds(self, purpose: Purpose) -> bool:
        return purpose in self.tokens

    # -- checking --------------------------------------------------------------------------

    def granted(self, header: str | None) -> frozenset[Purpose]:
        """The purposes an Authorization value proves (empty for none or a wrong one)."""
        if not header:
            return frozenset()
        seen = self._seen.get(header)
        if seen is not None:
            return seen
        scheme, _, token = header.partition(" ")
        found: frozenset[Purpose] = frozenset()
        if scheme == AUTH_SCHEME:
            digest = _digest(token.strip())
            found = frozenset(
                p for p, v in self.verifiers.items() if hmac.compare_digest(digest, v)
            )
        if len(self._seen) >= SEEN_HEADERS_MAX:
            self._seen.clear()  # a flood of wrong headers costs a hash each, never memory
        self._seen[header] = found
        return found

    def allows(self, header: str | None, *purposes: Purpose) -> bool:
        """Whether the header proves any of `purposes`."""
        granted = self.granted(header)
        return any(p in granted for p in purposes)

    # -- files -------------------------------------------------------------------------------

    def to_json(self) -> str:
        doc = {
            "version": CREDENTIALS_FILE_VERSION,
            "tokens": {p.value: t for p, t in self.tokens.items()},
            "verifiers": {p.value: v.hex() for p, v in self.verifiers.items()},
            "url_key": None if self.url_key is None else self.url_key.hex(),
            "ticket_key": None if self.ticket_key is None else self.ticket_key.hex(),
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: str = "credentials") -> Credentials:
        try:
            doc = json.loads(text)
            if doc.get("version") != CREDENTIALS_FILE_VERSION:
                raise ValueError(
                    f"version {doc.get('version')!r} is not {CREDENTIALS_FILE_VERSION}"
                )
            tokens = {Purpose(k): str(v) for k, v in doc["tokens"].items()}
            verifiers = {Purpose(k): bytes.fromhex(v) for k, v in doc["verifiers"].items()}
            key = doc.get("url_key")
            url = None if key is None else bytes.fromhex(key)
            key = doc.get("ticket_key")  # absent from files written before f4 read tickets
            ticket = None if key is None else bytes.fromhex(key)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CredentialError(f"{where} is not a pinhole credentials file: {e}") from None
        return cls(tokens, verifiers, url, ticket)

    def write(self, path: Path) -> None:
        """Writes the file (mode 0600) atomically: a reader never sees half of it."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> Credentials:
        try:
            text = path.read_text()
        except OSError as e:
            raise CredentialError(f"cannot read {path}: {e.strerror}") from e
        return cls.from_json(text, where=str(path))


def url_key(secret: bytes) -> bytes:
    """The key of signed photo URLs."""
    return hmac.new(secret, URL_KEY_LABEL.encode(), hashlib.sha256).digest()


def ticket_key(secret: bytes) -> bytes:
    """The key of f4 read tickets (common/read_ticket.py)."""
    return hmac.new(secret, TICKET_KEY_LABEL.encode(), hashlib.sha256).digest()


# -- the cluster secret -------------------------------------------------------------------


class SecretError(ValueError):
    pass


def load_secret(*, secret_file: Path | None, default_dir: Path | None) -> bytes:
    """The cluster secret: from `secret_file` when given, else the environment variable,
    else `<default_dir>/cluster.secret`. Raises SecretError when none is found."""
    if secret_file is not None:
        return _read(secret_file)
    env = os.environ.get(SECRET_ENV)
    if env:
        secret = env.encode()
        if len(secret) < SECRET_BYTES_MIN:
            raise SecretError(f"{SECRET_ENV} is shorter than {SECRET_BYTES_MIN} bytes")
        return secret
    if default_dir is not None and (default_dir / SECRET_FILE_NAME).exists():
        return _read(default_dir / SECRET_FILE_NAME)
    where = f" or {default_dir / SECRET_FILE_NAME}" if default_dir else ""
    raise SecretError(f"no cluster secret: set {SECRET_ENV}, pass a secret file{where}")


def ensure_secret_file(directory: Path) -> Path:
    """Creates `<directory>/cluster.secret` (mode 0600) unless it exists: the local cluster's
    secret on a fresh machine."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SECRET_FILE_NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


def _read(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise SecretError(f"cannot read the cluster secret {path}: {e.strerror}") from e
    if len(secret) < SECRET_BYTES_MIN:
        raise SecretError(f"the cluster secret in {path} is shorter than {SECRET_BYTES_MIN} bytes")
    return secret
