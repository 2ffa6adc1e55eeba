"""The API's broker client: publishes wake-ups (QoS 1) after commit, sends
dynamic-security commands (broker credentials for clients), and receives the typing events
clients publish so the API can relay them to the other members of a thread.

paho-mqtt runs its network loop on its own thread (`loop_start`); `publish` only queues a
packet and wakes that thread, so it never blocks the event loop. Answers and typing events
come back to the event loop through `call_soon_threadsafe`. While the broker is unreachable
paho reconnects by itself and holds up to publish_queue_max publishes; beyond that they are
dropped and counted: MQTT is a wake-up channel, catch-up through the API has every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.errors import PinholeError
from realtime import dynsec, topics
from realtime.config import RealtimeConfig

log = logging.getLogger("pinhole.realtime")

QOS_WAKEUP: Final = 1
KEEPALIVE_S: Final = 30
RECONNECT_DELAY_S_MIN: Final = 1  # paho counts whole seconds
RECONNECT_DELAY_S_MAX: Final = 2
# Errors of dynamic-security commands that leave the wanted state in place.
_ALREADY: Final = ("already exists",)
_ABSENT: Final = ("not found",)


class RealtimeError(PinholeError):
    """The broker did not answer, or refused a command."""

    status = 503
    code = "realtime_unavailable"
    retry_after_s = 5.0


class RealtimeOff(PinholeError):
    """This deployment has no broker configured ([realtime] broker_host)."""

    status = 404
    code = "realtime_off"


@dataclass(frozen=True, slots=True)
class Statistics:
    connected: bool
    published: int
    dropped: int
    typing_relayed: int
    typing_dropped: int


TypingHandler = Callable[[int, int], Any]  # (user id, thread id) -> awaitable


class Broker:
    """One connection of this process to the broker (see the module docstring)."""

    def __init__(self, config: RealtimeConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._correlation = itertools.count(1)
        self._prefix = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._typing: asyncio.Queue[tuple[int, int]] = asyncio.Queue(config.typing_queue_max)
        self.typing_handler: TypingHandler | None = None
        self.published = 0
        self.dropped = 0
        self.typing_relayed = 0
        self.typing_dropped = 0

    def statistics(self) -> Statistics:
        return Statistics(
            self._connected.is_set(),
            self.published,
            self.dropped,
            self.typing_relayed,
            self.typing_dropped,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, password: str) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.config.admin_username}-{self._prefix}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(self.config.admin_username, password)
        client.max_queued_messages_set(self.config.publish_queue_max)
        client.reconnect_delay_set(RECONNECT_DELAY_S_MIN, RECONNECT_DELAY_S_MAX)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(self.config.broker_host, self.config.broker_port, KEEPALIVE_S)
        client.loop_start()
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        for future in self._pending.values():
            future.cancel()

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self._connected.is_set()

    # -- paho's thread --------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the API's connection: %s", reason)
            return
        client.subscribe(dynsec.RESPONSE_TOPIC, qos=1)
        client.subscribe(f"$share/{dynsec.SHARE_GROUP}/{topics.TYPING_FILTER}", qos=0)
        self._call(self._connected.set)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._call(self._connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == dynsec.RESPONSE_TOPIC:
            try:
                responses = json.loads(message.payload).get("responses", [])
            except (ValueError, AttributeError):
                return
            for response in responses:
                if isinstance(response, dict):
                    self._call(self._answer, response)
            return
        typing = topics.parse_typing(message.topic)
        if typing is not None:
            self._call(self._queue_typing, typing)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    # -- the event loop -------------------------------------------------------------------

    def _answer(self, response: dict[str, Any]) -> None:
        future = self._pending.pop(str(response.get("correlationData", "")), None)
        if future is not None and not future.done():
            future.set_result(response)

    def _queue_typing(self, typing: tuple[int, int]) -> None:
        try:
            self._typing.put_nowait(typing)
        except asyncio.QueueFull:
            self.typing_dropped += 1

    async def relay_typing(self) -> None:
        """Relays typing events to `typing_handler` until cancelled."""
        while True:
            user_id, thread_id = await self._typing.get()
            handler = self.typing_handler
            if handler is None:
                continue
            try:
                await handler(user_id, thread_id)
                self.typing_relayed += 1
            except Exception:  # one bad event must not stop the relay
                log.exception("typing relay failed for user %s thread %s", user_id, thread_id)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queues one QoS 1 publish (never blocks); counted as dropped when the queue is full
        or the client is closed."""
        client = self._client
        if client is None:
            self.dropped += 1
            return
        info = client.publish(topic, payload, qos=QOS_WAKEUP)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or info.rc == mqtt.MQTT_ERR_NO_CONN:
            self.published += 1  # with no connection paho holds it until it reconnects
        else:
            self.dropped += 1

    async def command(self, command: dict[str, Any], *, tolerate: tuple[str, ...] = ()) -> None:
        """Sends one dynamic-security command and waits for its answer; RealtimeError when
        the broker does not answer in command_timeout_s or refuses it (unless the error
        contains one of `tolerate`)."""
        client = self._client
        if client is None:
            raise RealtimeError("the real-time broker client is closed")
        if not await self.wait_connected(self.config.command_timeout_s):
            raise RealtimeError("the real-time broker is unreachable")
        correlation = f"{self._prefix}-{next(self._correlation)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        body = json.dumps({"commands": [{**command, "correlationData": correlation}]})
        client.publish(dynsec.CONTROL_TOPIC, body, qos=1)
        try:
            response = await asyncio.wait_for(future, self.config.command_timeout_s)
        except TimeoutError:
            raise RealtimeError("the real-time broker did not answer in time") from None
        finally:
            self._pending.pop(correlation, None)
        error = response.get("error")
        if error and not any(t in str(error).lower() for t in tolerate):
            raise RealtimeError(f"the broker refused {command['command']}: {error}")

    async def grant(self, username: str, password: str, user_id: int) -> None:
        """Makes broker credentials for one client of `user_id` (see realtime/dynsec.py)."""
        await self.command(dynsec.create_role(user_id), tolerate=_ALREADY)
        await self.command(dynsec.create_client(username, password, user_id))

    async def revoke(self, username: str) -> None:
        """Deletes a client's credentials; the broker disconnects it at once."""
        await self.command(dynsec.delete_client(username), tolerate=_ABSENT)


@contextlib.asynccontextmanager
async def running_broker_client(config: RealtimeConfig) -> AsyncIterator[Broker | None]:
    """A started Broker for the config's broker, or None when no broker is configured."""
    if not config.enabled:
        yield None
        return
    broker = Broker(config)
    broker.start(await asyncio.to_thread(config.admin_password))
    relay = asyncio.create_task(broker.relay_typing())
    try:
        yield broker
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await broker.close()
