"""The web client's direct messages in a real browser, live over MQTT-over-WebSockets: two
browser contexts as two users against a cluster started by `pinhole up` (its own Mosquitto
with a WebSocket listener). A message, a reply, a photo, a reaction, an unsend, typing and
read receipts reach the other side without a reload; a message from someone not followed
waits in the requests until accepted; across a block nothing is delivered. Screenshots of
the inbox and a thread go with the others; the new screens pass axe-core's rules."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.web.browser_kit import (
    AXE,
    PASSWORD,
    _api,
    _axe,
    _context,
    _find,
    _photo_loaded,
    _png,
    _users,
    expect,
)


def _message(page: Any, username: str) -> None:
    """From the user's profile, the "Message" button: the thread with them, or a new one."""
    _find(page, username)
    page.get_by_role("link", name="Message", exact=True).click()


def _send(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def _log(page: Any) -> Any:
    return page.get_by_role("log", name="Messages")


def _badge(page: Any, link: str) -> Any:
    return page.locator(f"#{link} .badge")


@pytest.mark.timeout(180)
def test_messages_replies_and_reactions_arrive_live(
    browser: Any, base_url: str, screens: Path, tmp_path: Path, csp_violations: list[str]
) -> None:
    with _users(browser, base_url, csp_violations, "mia", "noah") as (mia, noah):
        # noah follows mia: mia's notifications badge counts it without a reload.
        _find(noah, "mia")
        noah.get_by_role("button", name="Follow").click()
        expect(noah.get_by_role("button", name="Following")).to_be_visible()
        expect(_badge(mia, "nav-notifications")).to_have_text("1")

        # noah waits in his inbox; mia writes to him from his profile.
        noah.get_by_role("link", name="Messages").click()
        expect(noah.get_by_text("No messages yet")).to_be_visible()
        _message(mia, "noah")
        expect(mia.get_by_role("heading", name="New message to noah")).to_be_visible()
        _send(mia, "hi noah, coffee later?")
        expect(_log(mia).get_by_text("hi noah, coffee later?")).to_be_visible()

        # He follows her, so it lands in his inbox, live, with its preview and unread count.
        conversations = noah.get_by_role("list", name="Conversations")
        expect(conversations.get_by_role("link", name="mia")).to_be_visible()
        expect(conversations.get_by_text("hi noah, coffee later?")).to_be_visible()
        expect(conversations.get_by_label("1 unread", exact=True)).to_be_visible()
        expect(_badge(noah, "nav-messages")).to_have_text("1")
        noah.screenshot(path=screens / "10-inbox.png")

        # He opens it: mia sees it seen; he types and she sees it; his reply reaches her.
        conversations.get_by_role("link", name="mia").click()
        expect(_log(noah).get_by_text("hi noah, coffee later?")).to_be_visible()
        expect(mia.locator(".receipt")).to_have_text("Seen")
        noah.get_by_label("Message", exact=True).press_sequentially("sure")
        expect(mia.get_by_text("noah is typing…")).to_be_visible()
        noah.get_by_role("button", name="Send", exact=True).click()
        expect(_log(mia).get_by_text("sure", exact=True)).to_be_visible()
        expect(_log(noah).get_by_text("sure", exact=True)).to_be_visible()

        # A photo through the upload path; a reaction and an unsend, all live on the other side.
        mia.get_by_label("Send a photo").set_input_files(str(_png(tmp_path, "cafe.png", 21)))
        _photo_loaded(noah, "Photo from mia")
        mia_log = _log(mia)
        mia_log.locator("li", has_text="sure").get_by_role(
            "button", name="React ❤ to this message"
        ).click()
        expect(_log(noah).get_by_label("Reactions: ❤ from mia")).to_be_visible()
        mia_log.locator("li", has_text="hi noah, coffee later?").get_by_role(
            "button", name="Unsend"
        ).click()
        expect(_log(noah).get_by_text("Message unsent")).to_be_visible()
        expect(_log(noah).get_by_text("hi noah, coffee later?")).to_have_count(0)
        # Everyone sees the same order: the unsent message keeps its place.
        expect(_log(noah).locator("li")).to_have_count(3)
        assert _log(noah).locator("li").evaluate_all("els => els.map(e => e.dataset.seq)") == [
            "1",
            "2",
            "3",
        ]
        _photo_loaded(mia, "Photo from mia")
        mia.screenshot(path=screens / "11-thread.png", full_page=True)

        # Delete for me: the photo leaves mia's thread, for good, and stays in noah's.
        mia_log.locator("li", has=mia.get_by_role("img", name="Photo from mia")).get_by_role(
            "button", name="Delete for me"
        ).click()
        expect(mia_log.locator("li")).to_have_count(2)
        mia.reload()
        expect(mia_log.get_by_text("sure", exact=True)).to_be_visible()
        expect(mia_log.locator("li")).to_have_count(2)
        expect(_log(noah).get_by_role("img", name="Photo from mia")).to_be_visible()

        # Signing out disconnects from the broker (the client is gone from the page).
        mia.get_by_role("button", name="Sign out").click()
        expect(mia.get_by_role("heading", name="Sign in to pinhole")).to_be_visible()
        assert mia.evaluate("sessionStorage.getItem('pinhole.mqtt')") is None


@pytest.mark.timeout(120)
def test_a_request_waits_until_accepted_and_a_block_stops_messages(
    browser: Any, base_url: str, csp_violations: list[str]
) -> None:
    with _users(browser, base_url, csp_violations, "olga", "pete") as (olga, pete):
        # pete does not follow olga: her message waits in his requests (live there).
        pete.goto("/#/messages/requests")
        expect(pete.get_by_text("No message requests.")).to_be_visible()
        _message(olga, "pete")
        expect(olga.get_by_text("your message goes to their message requests")).to_be_visible()
        _send(olga, "hello from olga")
        expect(_log(olga).get_by_text("hello from olga")).to_be_visible()
        requests = pete.get_by_role("list", name="Message requests")
        expect(requests.get_by_role("link", name="olga")).to_be_visible()
        pete.get_by_role("link", name="Inbox").click()
        expect(pete.get_by_text("No messages yet")).to_be_visible()

        # Accepted, it moves to the inbox.
        pete.get_by_role("link", name="Requests").click()
        requests.get_by_role("button", name="Accept").click()
        expect(pete.get_by_text("No message requests.")).to_be_visible()
        pete.get_by_role("link", name="Inbox").click()
        conversations = pete.get_by_role("list", name="Conversations")
        expect(conversations.get_by_role("link", name="olga")).to_be_visible()

        # pete blocks olga: her next message is refused and she is told.
        _find(pete, "olga")
        pete.on("dialog", lambda dialog: dialog.accept())
        pete.get_by_role("button", name="Block").click()
        expect(pete.get_by_role("button", name="Unblock")).to_be_visible()
        _send(olga, "are you there?")
        expect(olga.get_by_role("alert")).to_have_text("You can't message this account.")
        expect(_log(olga).locator("li")).to_have_count(1)
        # Nor can she start over from his profile: it is gone for her.
        olga.goto("/#/messages/to/pete")
        expect(olga.get_by_role("heading", name="Not found")).to_be_visible()


def _account(base_url: str, username: str) -> tuple[str, str]:
    """(user id, session token) of a new account, through the API."""
    json_type = {"Content-Type": "application/json"}
    body = json.dumps({"username": username, "password": PASSWORD}).encode()
    user = _api(base_url, "POST", "/api/v1/accounts", body, json_type)
    token = _api(base_url, "POST", "/api/v1/sessions", body, json_type)["token"]
    return user["user_id"], token


@pytest.mark.timeout(120)
def test_the_message_screens_pass_axe_and_the_policy_names_the_broker(
    browser: Any, base_url: str
) -> None:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: scripts/bootstrap installs web/'s npm packages")
    quinn_id, _ = _account(base_url, "quinn")
    _, rosa = _account(base_url, "rosa")
    _account(base_url, "sam")
    auth = {"Authorization": f"Bearer {rosa}", "Content-Type": "application/json"}
    first = {"recipient_ids": [quinn_id], "client_id": "axe-1", "text": "a request for quinn"}
    _api(base_url, "POST", "/api/v1/messages", json.dumps(first).encode(), auth)
    # The page may connect to this origin and to the broker's WebSocket listener, no other.
    live = _api(base_url, "POST", "/api/v1/realtime/credentials", b"{}", auth)
    assert live["websocket_url"].startswith("ws://"), live
    with urllib.request.urlopen(base_url + "/", timeout=10) as r:
        csp = dict(p.split(" ", 1) for p in r.headers["Content-Security-Policy"].split("; "))
    assert csp["connect-src"] == f"'self' {live['websocket_url']}"

    # axe is injected as a script: this context alone lets the page run it despite the CSP.
    ctx = browser.new_context(base_url=base_url, bypass_csp=True)
    page = ctx.new_page()
    page.goto("/#/signin")
    page.get_by_label("Username").fill("quinn")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Messages").click()
    expect(page.get_by_text("No messages yet")).to_be_visible()
    found = _axe(page, "inbox")
    page.get_by_role("link", name="Requests").click()
    requests = page.get_by_role("list", name="Message requests")
    expect(requests.get_by_text("a request for quinn")).to_be_visible()
    found += _axe(page, "requests")
    requests.get_by_role("link", name="rosa").click()
    expect(_log(page).get_by_text("a request for quinn")).to_be_visible()
    found += _axe(page, "thread")
    page.emulate_media(color_scheme="dark")
    found += _axe(page, "thread, dark")
    page.emulate_media(color_scheme="light")
    page.goto("/#/messages/to/sam")
    expect(page.get_by_role("heading", name="New message to sam")).to_be_visible()
    found += _axe(page, "new message")
    ctx.close()
    assert not found, "\n".join(found)


def _sign_in(page: Any, username: str) -> None:
    page.goto("/#/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="New post")).to_be_visible()


@pytest.mark.timeout(120)
def test_a_dropped_connection_reconnects_and_catches_up_and_sign_out_disconnects(
    browser: Any, base_url: str, csp_violations: list[str]
) -> None:
    tara_id, _ = _account(base_url, "tara")
    _, uma = _account(base_url, "uma")
    auth = {"Authorization": f"Bearer {uma}", "Content-Type": "application/json"}
    sent = 0

    def uma_says(text: str) -> str:
        nonlocal sent
        sent += 1
        body = {"recipient_ids": [tara_id], "client_id": f"drop-{sent}", "text": text}
        return str(
            _api(base_url, "POST", "/api/v1/messages", json.dumps(body).encode(), auth)["thread_id"]
        )

    thread_id = uma_says("are you online?")

    # Every WebSocket the page opens goes through here: passed to the broker, or, while
    # `refusing`, closed at once (the broker unreachable).
    ctx = _context(browser, base_url, csp_violations)
    page = ctx.new_page()
    attempts: list[Any] = []
    closed_by_page: list[Any] = []
    refusing = False

    def route(ws: Any) -> None:
        attempts.append(ws)
        ws.on_close(lambda code, reason: closed_by_page.append(ws))
        if refusing:
            ws.close()
        else:
            ws.connect_to_server()

    page.route_web_socket(re.compile(r"^ws://"), route)
    _sign_in(page, "tara")
    page.goto(f"/#/messages/{thread_id}")
    expect(_log(page).get_by_text("are you online?")).to_be_visible()
    uma_says("first, live")
    expect(_log(page).get_by_text("first, live")).to_be_visible()

    # The connection drops and the broker stays away for a while: the client retries with
    # backoff; a message sent meanwhile is caught up through the API once it is back.
    refusing = True
    attempts[-1].close()
    uma_says("sent while you were away")
    for _ in range(150):  # the retries come after about 1, then 2 s
        if len(attempts) >= 3:
            break
        page.wait_for_timeout(100)
    assert len(attempts) >= 3, attempts  # the first connection and two refused retries
    refusing = False
    expect(_log(page).get_by_text("sent while you were away")).to_be_visible()
    uma_says("and live again")
    expect(_log(page).get_by_text("and live again")).to_be_visible()
    expect(_log(page).locator("li")).to_have_count(4)

    # Signing out closes the connection to the broker, and it is not opened again.
    live = attempts[-1]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to pinhole")).to_be_visible()
    for _ in range(100):
        if live in closed_by_page:
            break
        page.wait_for_timeout(100)
    assert live in closed_by_page
    assert attempts[-1] is live
    ctx.close()
