"""Raw HTTP exchanges for the tests that compare two servers byte for byte."""

from __future__ import annotations

import asyncio
import re

from common.request_metrics import RequestMetrics

ANSWER_TIMEOUT_S = 10.0
DATE_LINE = re.compile(rb"\r\nDate: [^\r\n]*")


async def ask(port: int, raw: bytes) -> bytes:
    """Everything a server on 127.0.0.1:`port` sends for `raw` on a fresh connection: the
    request in one write (on loopback it arrives in one read), then the end of the client's
    side, so the server closes after its answers and every byte it sent is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT_S)
    finally:
        writer.close()


def request_counts(metrics: RequestMetrics) -> list[tuple[dict[str, str], float]]:
    """The request counter's samples: (labels, count)."""
    return [
        (s.labels, s.value)
        for family in metrics.collect()
        if family.type == "counter"
        for s in family.samples
    ]
