"""The store's hot GET in process, no sockets: `StoreHttpApi.handle` and the server's framing
(`encode_response`) of page-cache hits, repeated, for instruction counts under callgrind.

    python -m bench.store_hot_get N            # N GETs of 20 KiB needles; prints us per GET
    PINHOLE_STORE_NATIVE=0 python -m ...       # the same through the pure-Python path

Instructions per GET = (I(2N) - I(N)) / N from two runs under
`valgrind --tool=callgrind --toggle-collect=map_next` (only what runs under the GET loop's
map() is counted; the warm-up cancels out). Counts are stable on a shared machine where
timings are not.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Final

from common.credentials import Credentials, Purpose
from common.leanhttp.message import Request, Response, date_line, encode_response
from store.config import StoreConfig
from store.http_api import StoreHttpApi
from store.node import StoreNode
from store.volume_config import VolumeLimits

NEEDLES: Final = 100
NEEDLE_BYTES: Final = 20 * 1024
WARM_UP_GETS: Final = 1000
COOKIE: Final = 0x1234ABCD5678EF90
VID: Final = 1


async def run(gets: int) -> float:
    """Microseconds per GET over `gets` GETs (after a warm-up)."""
    credentials = Credentials.from_secret(os.urandom(32))
    with tempfile.TemporaryDirectory() as tmp:
        config = StoreConfig(
            data_dir=Path(tmp) / "node",
            compaction_check_interval_s=0,
            access_log=False,
            volume=VolumeLimits(size_bytes_max=64 * 1024 * 1024),
        )
        node = StoreNode(config, credentials=credentials)
        await node.start()
        try:
            await node.create_volume(VID)
            data = os.urandom(NEEDLE_BYTES)
            for key in range(NEEDLES):
                await node.put(VID, key, 0, COOKIE, data)
            api = StoreHttpApi(node, credentials=credentials)
            headers = {"authorization": credentials.header(Purpose.READ), "host": "store"}
            requests = [
                Request("GET", f"/n/{VID}/{k}/0/{COOKIE:016x}", "", headers, "1.1", True, None)
                for k in range(NEEDLES)
            ]
            date = date_line()
            handle = api.handle

            def get(i: int) -> None:
                resp = handle(requests[i % NEEDLES])
                assert isinstance(resp, Response) and resp.status == 200
                encode_response(resp, False, False, date)

            def loop(n: int) -> None:
                # Driven by map() so that callgrind --toggle-collect=map_next counts the GETs
                # and not the start-up (the node's puts vary by more than N GETs cost).
                deque(map(get, range(n)), maxlen=0)

            loop(WARM_UP_GETS)
            started = time.perf_counter()
            loop(gets)
            return (time.perf_counter() - started) / gets * 1e6
        finally:
            await node.close()


def main() -> None:
    gets = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(f"{gets} GETs: {asyncio.run(run(gets)):.2f} us each")


if __name__ == "__main__":
    main()
