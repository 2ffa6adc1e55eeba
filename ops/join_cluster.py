"""`pinhole up --join URL`: this host's share of a cluster whose directory runs elsewhere.

A joined root (`--data`, default ./.pinhole) runs only what its `up --join` asked for: store
nodes (each with its data directory, port and failure domain) and at most one router, all
pointing at the existing directory. It never holds the cluster secret: each role's
credentials file (`pinhole credentials ROLE --out FILE` on the operator's machine) is copied
to <root>/credentials/<role>.json, and the services start with `--credentials`.

What was asked is recorded in <root>/join.json and the processes in <root>/services.json
(the registry of ops/local_cluster.py), so a later `pinhole up --join URL` on the same root
brings the same processes back (and adds stores named for the first time), and `pinhole
down` and `pinhole status` find them. A root is either a local cluster (cluster.json) or a
joined host (join.json), never both.

Before anything starts, the directory must answer /healthz within DIRECTORY_CHECK_S_MAX
and accept each credentials file (a store's node credential, a router's read credential),
so that a typo in the URL or a file of another cluster fails in one line at the
operator's terminal, not as heartbeat warnings in a log.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from common import credentials
from common.credentials import CredentialError, Credentials, Purpose
from ops import local_cluster as lc

JOIN_FILE: Final = "join.json"
JOIN_FILE_VERSION: Final = 1
DIRECTORY_CHECK_S_MAX: Final = 5.0
ROUTER_NAME: Final = "router-1"
# The roles a joined host can run, and the purpose the directory is asked to accept from
# each file before anything starts (a store sends node, a router read).
JOIN_ROLES: Final[dict[str, Purpose]] = {"store": Purpose.NODE, "router": Purpose.READ}
WILDCARD_HOSTS: Final = frozenset(("0.0.0.0", "::", ""))


class JoinError(Exception):
    """What is wrong with a join, in one line (the CLI prints it)."""


class DirectoryUnreachable(JoinError):
    """The directory did not answer (as opposed to refusing what it was given)."""


@dataclass(frozen=True, slots=True)
class JoinedStore:
    """One store node of this host."""

    node_id: str
    port: int
    failure_domain: str
    data_dir: Path


@dataclass(frozen=True, slots=True)
class JoinLayout:
    """What this host runs for the cluster whose directory is at directory_url."""

    root: Path
    directory_url: str
    # The address the services listen on, and the one the rest of the cluster reaches
    # them at (the same unless host is a wildcard).
    host: str
    advertise_host: str
    stores: tuple[JoinedStore, ...] = ()
    router_port: int | None = None
    config_file: Path | None = None

    def credentials_file(self, role: str) -> Path:
        return self.root / lc.CREDENTIALS_DIR / f"{role}.json"

    def url(self, port: int) -> str:
        return f"http://{_url_host(self.advertise_host)}:{port}"

    @property
    def router_url(self) -> str | None:
        return self.url(self.router_port) if self.router_port is not None else None

    @property
    def roles(self) -> set[str]:
        return ({"store"} if self.stores else set()) | ({"router"} if self.router_port else set())

    def services(self) -> list[lc.Service]:
        """The store nodes, then the router."""
        config = ("--config", str(self.config_file)) if self.config_file is not None else ()
        py = (sys.executable, "-m", "ops.cli", *config)
        out = []
        for s in self.stores:
            out.append(
                lc.Service(
                    s.node_id,
                    "store",
                    self.url(s.port),
                    (*py, "store", "serve", "--data", str(s.data_dir), "--host", self.host,
                     "--port", str(s.port), "--node-id", s.node_id,
                     "--failure-domain", s.failure_domain,
                     "--directory-url", self.directory_url,
                     "--advertise-url", self.url(s.port),
                     "--credentials", str(self.credentials_file("store"))),
                )
            )  # fmt: skip
        if self.router_port is not None:
            out.append(
                lc.Service(
                    ROUTER_NAME,
                    "router",
                    self.url(self.router_port),
                    (*py, "router", "serve", "--host", self.host,
                     "--port", str(self.router_port), "--directory-url", self.directory_url,
                     "--credentials", str(self.credentials_file("router"))),
                )
            )  # fmt: skip
        return out


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def check_directory_url(url: str) -> str:
    """The URL without a trailing slash, or JoinError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JoinError(f"--join {url!r} is not an http(s) URL of the directory")
    return url.rstrip("/")


def role_of(creds: Credentials) -> str | None:
    """The role of SERVICE_GRANTS whose file this is (the file does not name it: its
    purposes do), or None. A file without the f4 read-ticket key (written before read
    tickets) still names its role: its process then takes or signs no ticket, and f4 reads
    go through the name node in full."""
    for role, grant in credentials.SERVICE_GRANTS.items():
        if (
            set(creds.tokens) == grant.sends
            and set(creds.verifiers) == grant.accepts
            and (creds.url_key is not None) == grant.url_key
            and (creds.ticket_key is None or grant.ticket_key)
        ):
            return role
    return None


def read_credentials_files(paths: tuple[Path, ...]) -> dict[str, Credentials]:
    """role -> credentials, from the --credentials files; JoinError for a file that is not
    a credentials file, is an operator's (all purposes), or repeats a role."""
    out: dict[str, Credentials] = {}
    for path in paths:
        try:
            creds = Credentials.read(path)
        except CredentialError as e:
            raise JoinError(str(e)) from None
        role = role_of(creds)
        if role is None:
            raise JoinError(
                f"{path} is not the credentials file of one role "
                "(write one with `pinhole credentials ROLE --out FILE`)"
            )
        if role in out:
            raise JoinError(f"two --credentials files of the {role} role")
        out[role] = creds
    return out


async def check_directory(
    url: str, held: dict[str, Credentials], *, timeout_s: float = DIRECTORY_CHECK_S_MAX
) -> None:
    """The directory answers and accepts each role's credential, or DirectoryUnreachable
    (no answer within timeout_s) or JoinError (it answered no).

    A store's node credential is tried on POST /repairs with an empty body (the one route
    besides heartbeats that takes it): 400 means the credential passed and the empty report
    was refused, so nothing is registered or repaired. A router's read credential is tried
    on GET /caches."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.get(url + "/healthz") as r:
                if r.status != 200:
                    raise JoinError(f"the directory at {url} answered /healthz with {r.status}")
            for role, creds in sorted(held.items()):
                purpose = JOIN_ROLES[role]
                headers = {"Authorization": creds.header(purpose)}
                if purpose == Purpose.NODE:
                    request = s.post(url + "/repairs", json={}, headers=headers)
                    accepted: tuple[int, ...] = (400,)
                else:
                    request = s.get(url + "/caches", headers=headers)
                    accepted = (200,)
                async with request as r:
                    if r.status not in accepted:
                        raise JoinError(
                            f"the directory at {url} refused the {role} credentials "
                            f"({r.status}): a file of another cluster's secret?"
                        )
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        reason = str(e) or type(e).__name__
        raise DirectoryUnreachable(f"cannot reach the directory at {url}: {reason}") from None


def join_file(root: Path) -> Path:
    return root / JOIN_FILE


def save(layout: JoinLayout) -> None:
    doc = {
        "version": JOIN_FILE_VERSION,
        "directory_url": layout.directory_url,
        "host": layout.host,
        "advertise_host": layout.advertise_host,
        "stores": [
            {
                "node_id": s.node_id,
                "port": s.port,
                "failure_domain": s.failure_domain,
                "data_dir": str(s.data_dir),
            }
            for s in layout.stores
        ],
        "router_port": layout.router_port,
        "config_file": str(layout.config_file) if layout.config_file is not None else None,
    }
    path = join_file(layout.root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


def load(root: Path) -> JoinLayout | None:
    """What an earlier `up --join` recorded for this root, if any."""
    try:
        doc = json.loads(join_file(root).read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise JoinError(f"{join_file(root)} is damaged: {e}") from None
    if doc.get("version") != JOIN_FILE_VERSION:
        raise JoinError(f"{join_file(root)} has version {doc.get('version')!r}")
    return JoinLayout(
        root=root,
        directory_url=doc["directory_url"],
        host=doc["host"],
        advertise_host=doc["advertise_host"],
        stores=tuple(
            JoinedStore(s["node_id"], s["port"], s["failure_domain"], Path(s["data_dir"]))
            for s in doc["stores"]
        ),
        router_port=doc.get("router_port"),
        config_file=Path(doc["config_file"]) if doc.get("config_file") else None,
    )


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """The options of one `pinhole up --join` (None: as recorded)."""

    directory_url: str
    host: str | None
    advertise_host: str | None
    store: JoinedStore | None
    router_port: int | None
    config_file: Path | None


def resolve(root: Path, request: JoinRequest) -> JoinLayout:
    """The recorded layout of this root with the request on top: a store named for the
    first time is added, a recorded one must be asked for with the same options; the
    directory URL, addresses and router port cannot change while recorded."""
    if lc.layout_file(root).exists():
        raise JoinError(
            f"{root} holds a local cluster (`pinhole up`); give a joined host its own --data"
        )
    saved = load(root)
    url = check_directory_url(request.directory_url)
    if saved is not None and saved.directory_url != url:
        raise JoinError(
            f"{root} joined the directory at {saved.directory_url}, not {url}; give another --data"
        )
    host = request.host or (saved.host if saved else "127.0.0.1")
    if saved is not None and host != saved.host:
        raise JoinError(f"{root} listens on {saved.host}; --host cannot change it")
    advertise = request.advertise_host or (saved.advertise_host if saved else host)
    if saved is not None and advertise != saved.advertise_host:
        raise JoinError(f"{root} is reached at {saved.advertise_host}; it cannot change")
    if advertise in WILDCARD_HOSTS:
        raise JoinError(
            f"--host {host} listens on every address: give --advertise-host, the name or "
            "address the other hosts reach this one at"
        )
    stores = list(saved.stores) if saved else []
    if request.store is not None:
        same = [s for s in stores if s.node_id == request.store.node_id]
        if same and same[0] != request.store:
            raise JoinError(
                f"store {request.store.node_id} was recorded with port {same[0].port}, "
                f"failure domain {same[0].failure_domain} and data {same[0].data_dir}"
            )
        if not same:
            taken = {s.port for s in stores} | ({saved.router_port} if saved else set())
            if request.store.port in taken:
                raise JoinError(f"port {request.store.port} is taken by this host's services")
            stores.append(request.store)
    router_port = request.router_port or (saved.router_port if saved else None)
    if saved is not None and saved.router_port and router_port != saved.router_port:
        raise JoinError(f"the router of {root} listens on {saved.router_port}")
    if router_port is not None and router_port in {s.port for s in stores}:
        raise JoinError(f"--router-port {router_port} is a store's port")
    config_file = request.config_file or (saved.config_file if saved else None)
    layout = JoinLayout(
        root=root,
        directory_url=url,
        host=host,
        advertise_host=advertise,
        stores=tuple(stores),
        router_port=router_port,
        config_file=config_file.resolve() if config_file is not None else None,
    )
    if not layout.roles:
        raise JoinError(
            "nothing to run: name a store (--node-id, --store-port, --failure-domain) "
            "or a router (--router-port)"
        )
    return layout


def install_credentials(layout: JoinLayout, held: dict[str, Credentials]) -> None:
    """Copies each given role's credentials under the root (mode 0600): later starts do not
    depend on where the operator put the file. A role this host runs must have its file,
    given now or earlier."""
    directory = layout.root / lc.CREDENTIALS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for role, creds in held.items():
        creds.write(layout.credentials_file(role))
    for role in sorted(layout.roles):
        if not layout.credentials_file(role).exists():
            raise JoinError(
                f"a {role} needs its credentials: --credentials FILE from "
                f"`pinhole credentials {role} --out FILE`"
            )


def recorded_credentials(layout: JoinLayout) -> dict[str, Credentials]:
    """The credentials copied by an earlier join, for the roles this host runs."""
    out = {}
    for role in layout.roles:
        path = layout.credentials_file(role)
        if path.exists():
            try:
                out[role] = Credentials.read(path)
            except CredentialError as e:
                raise JoinError(str(e)) from None
    return out
