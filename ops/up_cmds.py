"""`pinhole up`, `pinhole status`, `pinhole down`: the local cluster on loopback.

`up` starts what is not running yet - a directory, store nodes (4 by default, two racks),
a cache and a router, each its own process - waits until they answer and the directory
hands out a writable volume, and (with --demo) stores a few demo photos through the write
path. In the foreground it restarts a service that crashes and stops them all on Ctrl-C;
with --detach it returns once the cluster is up. Run again on the same --data it brings back
the same cluster with its data (and starts a crashed service again); `--stores N` above the
recorded count adds store nodes.
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import click

from common import credentials
from ops import join_cluster as jc
from ops import local_cluster as lc
from ops.cli_support import (
    DEFAULT_ROOT,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    emit_json,
    load_config,
    run,
    table,
)
from ops.demo_account import USERNAME, demo_password
from transformer.media_store import MediaStatus

DEMO_FILE: Final = "demo.json"
DEMO_PHOTOS: Final = 6
START_S_MAX: Final = 60.0
WATCH_INTERVAL_S: Final = 1.0
RESTARTS_PER_SERVICE_MAX: Final = 5


data_option = click.option(
    "--data",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="All of the cluster's data lives here.",
)


def demo_png(seed: int, size: int = 256) -> bytes:
    """A small gradient PNG (no image library needed)."""
    r0, g0, b0 = (seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row += bytes(((r0 + x) % 256, (g0 + y) % 256, (b0 + x + y) % 256))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


def resolve_layout(
    root: Path,
    port_base: int | None,
    stores: int | None,
    workers: int | None = None,
    f4_watch: bool | None = None,
    config_file: Path | None = None,
) -> lc.Layout:
    """The recorded layout of this root, with the options on top (stores only grow; a
    --config file replaces the recorded one)."""
    saved = lc.load_layout(root)
    base = port_base or (saved.port_base if saved else lc.PORT_BASE_DEFAULT)
    count = stores or (saved.stores if saved else lc.STORES_DEFAULT)
    if saved is not None and count < saved.stores:
        raise CliError(
            f"this cluster has {saved.stores} store nodes; --stores cannot remove any "
            "(drain one with `pinhole volume balance` first)",
            2,
        )
    if saved is not None and base != saved.port_base and lc.read_registry(root):
        running = [e for e in lc.read_registry(root).values() if lc.alive(e)]
        if running:
            raise CliError("the cluster runs on other ports; `pinhole down` first", 2)
    workers = workers or (saved.workers if saved else lc.WORKERS_DEFAULT)
    if f4_watch is None:
        f4_watch = saved.f4_watch if saved else True
    if config_file is None and saved is not None:
        config_file = saved.config_file
    return lc.Layout(
        root=root,
        port_base=base,
        stores=count,
        workers=workers,
        f4_watch=f4_watch,
        config_file=config_file.resolve() if config_file is not None else None,
    )


async def _seed_demo(layout: lc.Layout) -> list[str]:
    """Demo photos uploaded through the API by the demo account (so they get the whole
    ladder) and posted as one carousel, recorded in <root>/demo.json and reused while they
    exist; the JPEG URL of each one's 640 variant."""
    import aiohttp

    from ops.demo_account import demo_token

    try:
        token = await demo_token(layout.api_url, layout.root)
    except (RuntimeError, aiohttp.ClientError) as e:
        raise CliError(str(e)) from None
    headers = {"Authorization": f"Bearer {token}"}
    api = layout.api_url + "/api/v1/media"
    path = layout.root / DEMO_FILE
    try:
        recorded = [str(d["media_id"]) for d in json.loads(path.read_text())]
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        recorded = []
    urls: list[str] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        docs: list[dict[str, Any]] = []
        for media_id in recorded:
            async with http.get(f"{api}/{media_id}", params={"wait_s": "10"}) as r:
                if r.status != 200:
                    docs = []
                    break
                docs.append(await r.json())
        if not docs:
            for i in range(DEMO_PHOTOS):
                form = aiohttp.FormData()
                form.add_field("file", demo_png(i), filename=f"demo-{i}.png")
                form.add_field("media_type", "image")
                async with http.post(f"{api}/upload", data=form) as r:
                    if r.status != 201:
                        raise CliError(f"demo upload failed: {r.status} {await r.text()}")
                    media_id = (await r.json())["media_id"]
                async with http.get(f"{api}/{media_id}", params={"wait_s": "10"}) as r:
                    docs.append(await r.json())
            post = {"media_ids": [d["media_id"] for d in docs], "caption": "hello #pinhole"}
            async with http.post(f"{layout.api_url}/api/v1/posts", json=post) as r:
                if r.status != 201:
                    raise CliError(f"demo post failed: {r.status} {await r.text()}")
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps([{"media_id": d["media_id"]} for d in docs], indent=2))
            tmp.replace(path)
    for doc in docs:
        if doc["status"] != MediaStatus.READY:
            raise CliError(f"demo media {doc['media_id']} is {doc['status']}, not ready")
        urls.append(doc["variants"]["640"]["formats"]["jpeg"])
    return urls


# Sealing a volume reaches the directory with the stores' next heartbeats (sent at once on a
# change); the demo waits at most this long for it.
SEAL_WAIT_S_MAX: Final = 30.0
F4_MIGRATE_S_MAX: Final = 300.0


async def _demo_f4(layout: lc.Layout, url: str) -> str:
    """Moves the volume of the demo photo at `url` to the f4 cell, the way an operator
    does: seal it on its replicas, wait until the directory sees it sealed, then run
    `pinhole f4 migrate --volume N` (migrated, checked blob by blob, reads switched to the
    name node, Haystack replicas released). The same URL is then served from f4."""
    import asyncio
    import sys
    from urllib.parse import urlsplit

    from common.credentials import Purpose
    from common.photo import parse_photo_path
    from store.client import StoreClient, StoreClientError

    vid = parse_photo_path(urlsplit(url).path).volume_id
    creds = layout.operator_credentials()
    admin = {"Authorization": creds.header(Purpose.ADMIN)}
    lookup = f"{layout.directory_url}/volumes/{vid}"
    async with aiohttp.ClientSession(headers=admin) as http:
        async with http.get(lookup) as r:
            doc = await r.json()
        if doc.get("state") == "f4":
            return url
        replicas = [rep for rep in doc["replicas"] if rep.get("url")]
        for rep in replicas:
            async with StoreClient(rep["url"], credentials=creds) as store:
                try:
                    await store.set_mode(vid, "sealed")
                except StoreClientError as e:
                    raise CliError(f"cannot seal volume {vid} on {rep['node_id']}: {e}") from e
        deadline = time.monotonic() + SEAL_WAIT_S_MAX
        while True:
            async with http.get(lookup) as r:
                doc = await r.json()
            if not doc.get("writable"):
                break
            if time.monotonic() > deadline:
                raise CliError(f"the directory still lists volume {vid} as writable")
            await asyncio.sleep(0.2)
    source = replicas[0]["node_id"]  # a local store: its volumes are under <root>/<node id>
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "--config", str(layout.f4_config_file),
        "f4", "migrate", "--volume", str(vid),
        "--haystack-dir", str(layout.root / source / "volumes"),
        "--media-data", str(layout.root / "media"),
        "--secret-file", str(layout.secret_file), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), F4_MIGRATE_S_MAX)
    if proc.returncode != 0:
        raise CliError(f"the demo's f4 migration failed: {out.decode(errors='replace')[-500:]}")
    return url


def _banner(
    layout: lc.Layout, running: dict[str, lc.Running], demo_urls: list[str], f4_url: str = ""
) -> None:
    # The first line leads a newcomer to the web client (docs/web.md).
    demo = demo_password(layout.root)
    sign_in = f"  (sign in as {USERNAME} / {demo})" if demo else "  (sign up there)"
    click.echo(f"web  {layout.api_url}/{sign_in}")
    click.echo(f"pinhole local cluster (data in {layout.root}/)")
    for e in running.values():
        click.echo(f"  {e.name:<10} {e.role:<9} {e.url}   pid {e.pid}")
    click.echo(f"  photos     {layout.router_url}/p/...")
    click.echo(f"  api        {layout.api_url}/api/v1  (described at /api/openapi.json)")
    mqtt = layout.broker_files
    click.echo(f"  mqtt       mqtt://{mqtt.host}:{mqtt.port}, {mqtt.websocket_url}  (push)")
    token = layout.root / "api" / "demo.token"
    click.echo(f"  token      {token}  (user demo; Authorization: Bearer ...)")
    click.echo(f"  secret     {layout.secret_file}")
    for u in demo_urls:
        click.echo(f"  demo       {u}")
    if f4_url:
        click.echo(f"  demo (f4)  {f4_url}  (its volume migrated to the f4 cell)")


def join_options(f: Any) -> Any:
    """`pinhole up --join URL` and what it starts (ops/join_cluster.py)."""
    port = click.IntRange(1, 65535)
    options = [
        click.option(
            "--join",
            "directory_url",
            metavar="URL",
            help="Join the cluster whose directory is at URL: start only the store node "
            "and/or router named below, on this host.",
        ),
        click.option(
            "--credentials",
            "credentials_files",
            multiple=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="With --join: a role's credentials file from `pinhole credentials ROLE "
            "--out FILE` (repeat for a store and a router).",
        ),
        click.option("--node-id", help="With --join: the store node's name in the cluster."),
        click.option("--store-port", type=port, help="With --join: the store node's port."),
        click.option("--failure-domain", help="With --join: the store node's dc/rack/host label."),
        click.option(
            "--store-data",
            type=click.Path(file_okay=False, path_type=Path),
            help="With --join: the store node's data directory (default <data>/<node id>).",
        ),
        click.option("--router-port", type=port, help="With --join: run a router on this port."),
        click.option(
            "--host",
            help="With --join: the address the services listen on (default 127.0.0.1).",
        ),
        click.option(
            "--advertise-host",
            help="With --join: the address other hosts reach this one at (default --host).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _up_join(
    root: Path,
    config_path: Path | None,
    *,
    detach: bool,
    directory_url: str,
    credentials_files: tuple[Path, ...],
    node_id: str | None,
    store_port: int | None,
    failure_domain: str | None,
    store_data: Path | None,
    router_port: int | None,
    host: str | None,
    advertise_host: str | None,
) -> None:
    """`pinhole up --join`: checks, records and starts this host's share of the cluster."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    store = None
    if any(v is not None for v in (node_id, store_port, failure_domain, store_data)):
        if node_id is None or store_port is None or failure_domain is None:
            raise CliError(
                "a store node needs --node-id, --store-port and --failure-domain", EXIT_USAGE
            )
        data_dir = (store_data or root / node_id).resolve()
        store = jc.JoinedStore(node_id, store_port, failure_domain, data_dir)
    try:
        held = jc.read_credentials_files(credentials_files)
        request = jc.JoinRequest(
            directory_url, host, advertise_host, store, router_port, config_path
        )
        layout = jc.resolve(root, request)
        if set(held) - layout.roles:
            extra = ", ".join(sorted(set(held) - layout.roles))
            raise jc.JoinError(f"--credentials of the {extra} role, which this host does not run")
        if layout.config_file is not None and config_path is None:
            load_config(layout.config_file, serving=True)
        run(jc.check_directory(layout.directory_url, {**jc.recorded_credentials(layout), **held}))
        jc.install_credentials(layout, held)
    except jc.DirectoryUnreachable as e:
        raise CliError(str(e), EXIT_UNREACHABLE) from e
    except jc.JoinError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    jc.save(layout)

    running = lc.read_registry(root)
    with _foreground(root, detach=detach):
        for service in layout.services():
            entry = running.get(service.name)
            if entry is None or not lc.alive(entry):
                running[service.name] = lc.start(service, root)
                lc.write_registry(root, running)
        mine = [running[s.name] for s in layout.services()]
        run(lc.wait_healthy(mine))
        click.echo(f"joined the cluster of {layout.directory_url} (data in {root}/)")
        for entry in mine:
            click.echo(f"  {entry.name:<10} {entry.role:<9} {entry.url}   pid {entry.pid}")
        if detach:
            click.echo("running in the background: `pinhole status`, `pinhole down`")
            return
        click.echo("Ctrl-C stops them")
        _watch(layout)


@click.command()
@data_option
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65000),
    help=f"Ports are laid out from here (default {lc.PORT_BASE_DEFAULT}, or as recorded).",
)
@click.option(
    "--stores",
    type=click.IntRange(lc.STORES_MIN, lc.STORES_MAX),
    help=f"Store nodes (default {lc.STORES_DEFAULT}, or as recorded; more adds nodes).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, lc.WORKERS_MAX),
    help=f"Media job workers (default {lc.WORKERS_DEFAULT}, or as recorded).",
)
@click.option("--demo/--no-demo", default=False, help="Store a few demo photos.")
@click.option("--detach", is_flag=True, help="Return once the cluster is up.")
@click.option(
    "--f4-watch/--no-f4-watch",
    default=None,
    help="Run the f4 cell's watcher (default: yes, or as recorded); without it only "
    "`pinhole f4 rebuild` repairs the cell.",
)
@join_options
@click.pass_context
def up(
    ctx: click.Context,
    /,
    root: Path,
    port_base: int | None,
    stores: int | None,
    workers: int | None,
    demo: bool,
    detach: bool,
    f4_watch: bool | None,
    **join: Any,
) -> None:
    """Start the local cluster (foreground: Ctrl-C stops it; --detach: `pinhole down`).
    `pinhole --config F up` starts every service with F (recorded: a later `up` on the same
    --data keeps it); without it the services read ./pinhole.toml.

    With --join URL: start only this host's share of the cluster whose directory is at URL
    (a store node, a router), with the credentials files of their roles
    (docs/operations/deploy.md)."""
    config_path: Path | None = ctx.obj["config_path"]
    # Refuse here, in one line, what the services would refuse.
    load_config(config_path, serving=True)
    if join["directory_url"] is not None:
        if port_base or stores or workers or demo or f4_watch is not None:
            raise CliError(
                "--join starts only a store node or a router: --port-base, --stores, "
                "--workers, --demo and --f4-watch belong to a local cluster",
                EXIT_USAGE,
            )
        _up_join(root, config_path, detach=detach, **join)
        return
    if any(v for k, v in join.items() if k != "directory_url"):
        raise CliError("--credentials, --node-id, --store-port ... need --join URL", EXIT_USAGE)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    if jc.join_file(root).exists():
        raise CliError(
            f"{root} joined a cluster (`pinhole up --join URL` starts its services again)",
            EXIT_USAGE,
        )
    credentials.ensure_secret_file(root)
    # Fail early on an unreadable secret: every service loads it.
    credentials.load_secret(secret_file=root / credentials.SECRET_FILE_NAME, default_dir=None)
    layout = resolve_layout(root, port_base, stores, workers, f4_watch, config_path)
    if config_path is None and layout.config_file is not None:
        load_config(layout.config_file, serving=True)
    lc.save_layout(layout)

    with _foreground(root, detach=detach):
        running, _ = lc.start_missing(layout)
        run(lc.wait_up(layout, running))
        urls = run(_seed_demo(layout)) if demo else []
        f4_url = run(_demo_f4(layout, urls[0])) if urls else ""
        _banner(layout, running, urls, f4_url)
        if detach:
            click.echo("the cluster runs in the background: `pinhole status`, `pinhole down`")
            return
        click.echo("Ctrl-C stops the cluster")
        _watch(layout)


@contextlib.contextmanager
def _foreground(root: Path, *, detach: bool) -> Iterator[None]:
    """Around starting a root's services (a local cluster or a joined host): SIGTERM stops
    them as Ctrl-C does; a failure stops what was started unless --detach, a ClusterError
    as a one-line error; in the foreground, leaving the block stops every service."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        pass
    except lc.ClusterError as e:
        if not detach:
            _down(root, quiet=True)
        raise CliError(str(e), EXIT_FAILED) from e
    except BaseException:
        if not detach:
            _down(root, quiet=True)
        raise
    if not detach:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _down(root, quiet=False)


def _watch(layout: lc.Layout | jc.JoinLayout) -> None:
    """Restarts a service that exits, a few times at most, until interrupted."""
    restarts: dict[str, int] = {}
    by_name = {s.name: s for s in layout.services()}
    while True:
        time.sleep(WATCH_INTERVAL_S)
        running = lc.read_registry(layout.root)
        for name, e in running.items():
            if lc.alive(e) or name not in by_name:
                continue
            restarts[name] = restarts.get(name, 0) + 1
            if restarts[name] > RESTARTS_PER_SERVICE_MAX:
                continue
            click.echo(f"{name} exited; starting it again (see {e.log})")
            running[name] = lc.start(by_name[name], layout.root)
            lc.write_registry(layout.root, running)


def _down(root: Path, *, quiet: bool) -> list[str]:
    running = lc.read_registry(root)
    up_now = [e for e in running.values() if lc.alive(e)]
    # Workers and the API first, the directory last: nothing is left talking to a dead peer.
    roles: tuple[str, ...] = ("f4-watch", "worker", "api", "mqtt", "router", "cache")
    roles += ("f4-name", "f4-node", "store", "directory")
    up_now.sort(key=lambda e: roles.index(e.role) if e.role in roles else len(roles))
    killed: list[str] = []
    for role in roles:
        killed += lc.stop([e for e in up_now if e.role == role])
    if not quiet:
        for e in up_now:
            click.echo(f"stopped {e.name}" + (" (killed)" if e.name in killed else ""))
        if not up_now:
            click.echo("nothing was running")
    return [e.name for e in up_now]


@click.command()
@data_option
def down(root: Path) -> None:
    """Stop every service of the local cluster (data stays)."""
    _down(root.resolve(), quiet=False)


@click.command()
@data_option
@click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")
def status(root: Path, json_output: bool) -> None:
    """Each service of the local cluster: role, pid, url, health. Exit 1 unless all are up."""
    root = root.resolve()
    layout: lc.Layout | jc.JoinLayout | None = lc.load_layout(root)
    if layout is None:
        try:
            layout = jc.load(root)
        except jc.JoinError as e:
            raise CliError(str(e)) from e
    if layout is None:
        raise CliError(f"no local cluster in {root} (start one with `pinhole up`)")
    running = lc.read_registry(root)
    rows = run(_status_rows(layout, running))
    if json_output:
        emit_json({"services": rows, "ok": all(r["health"] == "ok" for r in rows)})
    else:
        click.echo(
            table(
                [[r["name"], r["role"], str(r["pid"] or "-"), r["url"], r["health"]] for r in rows],
                ["service", "role", "pid", "url", "health"],
            )
        )
    if not all(r["health"] == "ok" for r in rows):
        raise SystemExit(EXIT_FAILED)


async def _status_rows(
    layout: lc.Layout | jc.JoinLayout, running: dict[str, lc.Running]
) -> list[dict[str, Any]]:
    rows = []
    async with aiohttp.ClientSession() as s:
        for service in layout.services():
            e = running.get(service.name)
            pid = e.pid if e is not None and lc.alive(e) else None
            if e is None:
                state = "never started"
            elif pid is None:
                state = "down"
            else:
                state = "ok" if await lc.health(s, service.url) is not None else "unhealthy"
            rows.append(
                {
                    "name": service.name,
                    "role": service.role,
                    "pid": pid,
                    "url": service.url,
                    "health": state,
                    "log": str(service.log_path(layout.root)),
                }
            )
    return rows
