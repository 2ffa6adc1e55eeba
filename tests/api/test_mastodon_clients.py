"""The Mastodon client API with the real client libraries (Mastodon.py, toot) against a
cluster started by `pinhole up` (real processes: stores, router, workers, API), plus the
OAuth flows, the POST /api/v1/accounts collision and the privacy rules over plain HTTP.

The tests of this module share one cluster; each makes its own users."""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import requests
from mastodon import Mastodon
from mastodon.errors import MastodonAPIError, MastodonNotFoundError
from PIL import Image
from toot import App, User
from toot import api as toot_api

from tests.up_cluster import up_cluster

pytestmark = pytest.mark.crash
PASSWORD = "correct horse battery"
SETTLE_S_MAX = 30.0  # media processing and fan-out, on a busy machine
T = TypeVar("T")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mastodon") / "cluster"
    with up_cluster(root) as (layout, _):
        yield layout.api_url


def until(probe: Callable[[], T | None], what: str) -> T:
    """Polls `probe` until it gives a value (a positive condition, bounded)."""
    deadline = time.monotonic() + SETTLE_S_MAX
    while True:
        got = probe()
        if got is not None:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def jpeg(seed: int) -> io.BytesIO:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (seed * 40 % 256, 90, 200)).save(buf, "JPEG")
    buf.seek(0)
    return buf


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def sign_up(base: str, username: str) -> None:
    r = requests.post(
        base + "/api/v1/accounts", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert r.status_code == 201, r.text
    assert r.json()["username"] == username  # pinhole's own document


def pinhole_session(base: str, username: str) -> dict[str, str]:
    r = requests.post(
        base + "/api/v1/sessions", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def mastodon_user(base: str, username: str, app: tuple[str, str]) -> Mastodon:
    m = Mastodon(client_id=app[0], client_secret=app[1], api_base_url=base)
    m.log_in(username, PASSWORD, allow_http=True)
    return m


def oauth_app(base: str, scopes: str = "read write follow push") -> dict[str, Any]:
    r = requests.post(
        base + "/api/v1/apps",
        data={
            "client_name": "tests",
            "redirect_uris": "urn:ietf:wg:oauth:2.0:oob",
            "scopes": scopes,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def password_token(base: str, app: dict[str, Any], username: str, scope: str) -> dict[str, Any]:
    r = requests.post(
        base + "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "username": username,
            "password": PASSWORD,
            "scope": scope,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def posted_photo(m: Mastodon, caption: str, seed: int) -> Any:
    media = m.media_post(jpeg(seed), mime_type="image/jpeg", description=f"photo {seed}")
    return m.status_post(caption, media_ids=[media["id"]])


def test_mastodon_py_upload_post_follow_timeline_pages_favourite(base: str) -> None:
    alice, bob = name("alice"), name("bob")
    sign_up(base, alice)
    sign_up(base, bob)
    app = Mastodon.create_app("pinhole tests", api_base_url=base)
    a = mastodon_user(base, alice, app)
    b = mastodon_user(base, bob, app)
    assert a.account_verify_credentials()["username"] == alice
    assert a.retrieve_mastodon_version() == "4.3.0"

    # Bob searches for Alice and follows her.
    found = b.search_v2(alice, result_type="accounts")["accounts"]
    assert [acct["acct"] for acct in found] == [alice]
    rel = b.account_follow(found[0]["id"])
    assert rel["following"] is True
    assert b.account_relationships(found[0]["id"])[0]["following"] is True

    # Alice uploads a photo (202, url null while processing) and posts it, twice with one
    # Idempotency-Key: one status.
    media = a.media_post(jpeg(1), mime_type="image/jpeg", description="a harbour at dawn")
    assert media["url"] is None and media["description"] == "a harbour at dawn"
    ready = until(lambda: a.media(media["id"]) if a.media(media["id"])["url"] else None, "media")
    assert ready["blurhash"] and ready["meta"]["original"]["width"] == 320
    first = a.status_post("harbour #dawn", media_ids=[media["id"]], idempotency_key="k-1")
    again = a.status_post("harbour #dawn", media_ids=[media["id"]], idempotency_key="k-1")
    assert first["id"] == again["id"]
    assert first["media_attachments"][0]["description"] == "a harbour at dawn"
    assert first["tags"][0]["name"] == "dawn" and "#<span>dawn</span>" in first["content"]
    assert a.status(first["id"])["account"]["username"] == alice

    # It reaches Bob's home timeline (fan-out), with the photo's URLs.
    def in_home() -> Any:
        return next((s for s in b.timeline_home() if s["id"] == first["id"]), None)

    seen = until(in_home, "the status in the follower's home timeline")
    attachment = seen["media_attachments"][0]
    assert attachment["url"].startswith("http") and "original" not in attachment["url"]
    assert requests.get(attachment["url"], timeout=10).status_code == 200

    # Two more posts; Bob pages his timeline two at a time with the Link headers.
    second = posted_photo(a, "second", 2)
    third = posted_photo(a, "third", 3)
    until(lambda: True if len(b.timeline_home(limit=3)) == 3 else None, "three statuses")
    page = b.timeline_home(limit=2)
    assert [s["id"] for s in page] == [third["id"], second["id"]]
    older = b.fetch_next(page)
    assert older is not None and [s["id"] for s in older] == [first["id"]]
    newer = b.timeline_home(min_id=first["id"], limit=1)
    assert [s["id"] for s in newer] == [second["id"]]
    assert [s["id"] for s in b.timeline_home(since_id=second["id"])] == [third["id"]]

    # Favourite, bookmark, and Alice's notifications say so.
    faved = b.status_favourite(first["id"])
    assert faved["favourited"] is True and faved["favourites_count"] == 1
    assert b.status_bookmark(first["id"])["bookmarked"] is True
    notes = a.notifications()
    assert {(n["type"], n["account"]["username"]) for n in notes} >= {
        ("favourite", bob),
        ("follow", bob),
    }
    assert b.status_unfavourite(first["id"])["favourites_count"] == 0

    # The account timeline; then Alice deletes a status and it is gone.
    mine = a.account_statuses(a.me()["id"], limit=5)
    assert [s["id"] for s in mine] == [third["id"], second["id"], first["id"]]
    assert a.status_delete(third["id"])["id"] == third["id"]
    with pytest.raises(MastodonNotFoundError):
        b.status(third["id"])


def test_toot_sign_in_post_search_follow_page_favourite(base: str) -> None:
    carol, dan = name("carol"), name("dan")
    sign_up(base, carol)
    sign_up(base, dan)
    registered = toot_api.create_app(base)
    app = App("127.0.0.1", base, registered["client_id"], registered["client_secret"])
    # toot's login_cli asks for an "email" and sends it as the password grant's username.
    users = {}
    for who in (carol, dan):
        token = toot_api.login(app, who, PASSWORD)
        assert set(token["scope"].split()) >= {"read", "write", "follow"}
        users[who] = User("127.0.0.1", who, token["access_token"])
    creds = toot_api.verify_credentials(app, users[carol]).json()
    assert creds["username"] == carol

    # Dan finds Carol the way `toot follow` does, and follows her.
    account = toot_api.find_account(app, users[dan], carol)
    toot_api.follow(app, users[dan], account["id"])
    assert toot_api.get_relationship(app, users[dan], account["id"])["following"] is True

    posted = []
    for i in range(3):
        media = toot_api.upload_media(app, users[carol], jpeg(10 + i), description=f"n{i}").json()
        status = toot_api.post_status(
            app, users[carol], f"toot {i} #tooted", media_ids=[media["id"]]
        ).json()
        posted.append(status["id"])

    def all_in_home() -> list[str] | None:
        pages = toot_api.home_timeline_generator(app, users[dan], limit=1)
        ids = [s["id"] for page in pages for s in page]
        return ids if set(posted) <= set(ids) else None

    # One status a page: toot follows the rel="next" links to the end.
    ids = until(all_in_home, "toot's paged home timeline")
    assert ids == list(reversed(posted))
    liked = toot_api.favourite(app, users[dan], posted[0]).json()
    assert liked["favourited"] is True
    tagged = toot_api.search(app, users[dan], "#tooted", type="statuses").json()["statuses"]
    assert {s["id"] for s in tagged} == set(posted)


def test_oauth_authorization_code_refresh_scopes_revocation(base: str) -> None:
    erin = name("erin")
    sign_up(base, erin)
    app = oauth_app(base, "read write")
    ask = {
        "client_id": app["client_id"],
        "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
        "scope": "read",
        "response_type": "code",
    }
    page = requests.get(base + "/oauth/authorize", params=ask, timeout=10)
    assert page.status_code == 200 and 'name="password"' in page.text
    wrong = requests.post(
        base + "/oauth/authorize", data=ask | {"username": erin, "password": "nope nope"}
    )
    assert wrong.status_code == 401 and 'id="code"' not in wrong.text
    answer = requests.post(
        base + "/oauth/authorize", data=ask | {"username": erin, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    match = re.search(r'<code id="code">([^<]+)</code>', answer.text)
    assert match is not None
    exchange = {
        "grant_type": "authorization_code",
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "code": match.group(1),
        "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
    }
    r = requests.post(base + "/oauth/token", data=exchange, timeout=10)
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["scope"] == "read" and token["token_type"] == "Bearer"
    # A code is good once.
    reused = requests.post(base + "/oauth/token", data=exchange, timeout=10)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # A wrong client secret.
    bad_client = requests.post(
        base + "/oauth/token", data=exchange | {"client_secret": "x"}, timeout=10
    )
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"
    # Scopes beyond the app's registration are refused.
    too_wide = requests.post(
        base + "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "username": erin,
            "password": PASSWORD,
            "scope": "read write follow",
        },
        timeout=10,
    )
    assert too_wide.status_code == 400 and too_wide.json()["error"] == "invalid_scope"

    # A read token reads but cannot write or follow: 403 in Mastodon's error shape.
    headers = bearer(token["access_token"])
    me = requests.get(base + "/api/v1/accounts/verify_credentials", headers=headers, timeout=10)
    assert me.status_code == 200 and me.json()["username"] == erin
    refused = requests.post(
        base + "/api/v1/statuses", data={"status": "hi"}, headers=headers, timeout=10
    )
    assert refused.status_code == 403
    assert refused.json() == {"error": "This action is outside the authorized scopes"}
    follow = requests.post(
        base + f"/api/v1/accounts/{me.json()['id']}/follow", headers=headers, timeout=10
    )
    assert follow.status_code == 403
    # pinhole's own routes hold it to its scopes too: it reads, but does not write.
    feed = requests.get(base + "/api/v1/feed", headers=headers, timeout=10)
    assert feed.status_code == 200
    post = requests.post(base + "/api/v1/posts", json={"media_ids": []}, headers=headers)
    assert post.status_code == 403 and post.json()["error"]["code"] == "outside_scopes"
    # The token is a pinhole session: it is listed among the user's sessions.
    sessions = requests.get(base + "/api/v1/sessions", headers=headers, timeout=10)
    assert sessions.status_code == 200 and len(sessions.json()["sessions"]) == 1

    # Malformed bodies are 4xx in Mastodon's shape, never a 5xx.
    for content_type, raw in (
        ("multipart/form-data; boundary=x", b"--x\r\nbad"),
        ("application/x-www-form-urlencoded", b"a=%ff%fe"),
        ("application/json", b"[1, 2]"),
    ):
        r = requests.post(
            base + "/api/v1/apps", data=raw, headers={"Content-Type": content_type}, timeout=10
        )
        assert r.status_code == 400 and isinstance(r.json()["error"], str), (content_type, r.text)

    # Refresh: a new pair; the old access token stops working.
    r = requests.post(
        base + "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "refresh_token": token["refresh_token"],
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["access_token"] != token["access_token"] and fresh["scope"] == "read"
    old = requests.get(base + "/api/v1/timelines/home", headers=headers, timeout=10)
    assert old.status_code == 401 and "error" in old.json()
    new_headers = bearer(fresh["access_token"])
    assert requests.get(base + "/api/v1/timelines/home", headers=new_headers).status_code == 200

    # An app with its own redirect URI gets the code (and its state) back there.
    r = requests.post(
        base + "/api/v1/apps",
        json={"client_name": "web", "redirect_uris": "https://client.example/cb", "scopes": "read"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    web_app = r.json()
    redirected = requests.post(
        base + "/oauth/authorize",
        data={
            "client_id": web_app["client_id"],
            "redirect_uri": "https://client.example/cb",
            "state": "xyz",
            "username": erin,
            "password": PASSWORD,
        },
        allow_redirects=False,
        timeout=10,
    )
    assert redirected.status_code == 302
    location = redirected.headers["Location"]
    assert location.startswith("https://client.example/cb?code=") and "state=xyz" in location

    # Revocation ends it at once.
    r = requests.post(
        base + "/oauth/revoke",
        data={
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "token": fresh["access_token"],
        },
        timeout=10,
    )
    assert r.status_code == 200
    gone = requests.get(base + "/api/v1/timelines/home", headers=new_headers, timeout=10)
    assert gone.status_code == 401
    # On a path both APIs serve too, in Mastodon's shape.
    shared = requests.get(base + "/api/v1/notifications", headers=new_headers, timeout=10)
    assert shared.status_code == 401 and isinstance(shared.json()["error"], str)


def test_accounts_collision_serves_both_kinds_of_client(base: str) -> None:
    # pinhole's own sign-up: JSON, no token -> pinhole's user document.
    frank = name("frank")
    sign_up(base, frank)
    # Mastodon's registration (toot's register_account: an app token, agreement, locale)
    # -> a token for the new user.
    registered = toot_api.create_app(base)
    app = App("127.0.0.1", base, registered["client_id"], registered["client_secret"])
    grace = name("grace")
    token = toot_api.register_account(app, grace, f"{grace}@example.com", PASSWORD)
    assert "access_token" in token, token
    user = User("127.0.0.1", grace, token["access_token"])
    assert toot_api.verify_credentials(app, user).json()["username"] == grace
    # Without an OAuth token the path is pinhole's sign-up, whatever the body holds.
    r = requests.post(
        base + "/api/v1/accounts",
        json={"username": name("h"), "password": PASSWORD, "agreement": True, "locale": "en"},
        timeout=10,
    )
    assert r.status_code == 201 and "user_id" in r.json()
    # An app token with a pinhole-shaped body is Mastodon's registration: agreement needed.
    app_token = toot_api.fetch_app_token(app)["access_token"]
    r = requests.post(
        base + "/api/v1/accounts",
        json={"username": name("i"), "password": PASSWORD},
        headers=bearer(app_token),
        timeout=10,
    )
    assert r.status_code == 422 and r.json() == {"error": "agreement must be accepted"}
    # An app token cannot act as a user.
    r = requests.get(
        base + "/api/v1/accounts/verify_credentials", headers=bearer(app_token), timeout=10
    )
    assert r.status_code == 422
    # The other shared paths: the token decides the shape.
    session = pinhole_session(base, frank)
    mine = requests.get(base + "/api/v1/notifications", headers=session, timeout=10)
    assert mine.status_code == 200 and "notifications" in mine.json()
    theirs = requests.get(base + "/api/v1/notifications", headers=bearer(token["access_token"]))
    assert theirs.status_code == 200 and theirs.json() == []


def test_privacy_private_accounts_and_blocks(base: str) -> None:
    app = Mastodon.create_app("privacy tests", api_base_url=base)
    owner, stranger, friend, blocker = (name(p) for p in ("priv", "str", "fri", "blk"))
    for who in (owner, stranger, friend, blocker):
        sign_up(base, who)
    o, s, f, k = (mastodon_user(base, who, app) for who in (owner, stranger, friend, blocker))
    r = requests.patch(
        base + "/api/v1/accounts/me",
        json={"is_private": True},
        headers=pinhole_session(base, owner),
    )
    assert r.status_code == 200
    owner_id = o.me()["id"]
    # The friend asks to follow; the owner approves through pinhole's API.
    assert f.account_follow(owner_id)["requested"] is True
    approve = requests.post(
        base + f"/api/v1/follow_requests/{f.me()['id']}/approve",
        headers=pinhole_session(base, owner),
        timeout=10,
    )
    assert approve.status_code == 204
    secret = posted_photo(o, "only friends #hidden", 20)
    assert secret["visibility"] == "private"

    def live_for_friend() -> Any:
        try:
            return f.status(secret["id"])
        except MastodonNotFoundError:
            return None  # still processing: only its author sees it

    seen = until(live_for_friend, "the post to go live")

    # A non-follower sees the account but none of its statuses.
    assert s.account(owner_id)["locked"] is True
    assert s.account_statuses(owner_id) == []
    with pytest.raises(MastodonNotFoundError):
        s.status(secret["id"])
    assert s.search_v2("#hidden", result_type="statuses")["statuses"] == []
    # The follower sees it, its photo through a signed, expiring URL.
    url = seen["media_attachments"][0]["url"]
    assert "?e=" in url and "&s=" in url
    assert [st["id"] for st in f.account_statuses(owner_id)] == [secret["id"]]

    # Blocks hold both ways: the blocked user sees nothing of the blocker, and neither
    # finds nor follows the other.
    public = posted_photo(k, "public until blocked", 21)
    until(lambda: s.account_statuses(k.me()["id"]) or None, "the blocker's post to go live")
    stranger_id = s.me()["id"]
    assert k.account_block(stranger_id)["blocking"] is True
    with pytest.raises(MastodonNotFoundError):
        s.account(k.me()["id"])
    with pytest.raises(MastodonNotFoundError):
        s.status(public["id"])
    with pytest.raises(MastodonNotFoundError):
        k.account(stranger_id)
    assert s.search_v2(blocker, result_type="accounts")["accounts"] == []
    assert s.account_relationships(k.me()["id"]) == []
    with pytest.raises(MastodonAPIError):
        s.account_follow(k.me()["id"])


def test_mastodon_py_follow_requests_favourites_bookmarks_conversations(base: str) -> None:
    app = Mastodon.create_app("lists tests", api_base_url=base)
    owner, first, second = name("own"), name("req"), name("rej")
    for who in (owner, first, second):
        sign_up(base, who)
    o, f, s = (mastodon_user(base, who, app) for who in (owner, first, second))
    r = requests.patch(
        base + "/api/v1/accounts/me",
        json={"is_private": True},
        headers=pinhole_session(base, owner),
        timeout=10,
    )
    assert r.status_code == 200
    owner_id, first_id, second_id = o.me()["id"], f.me()["id"], s.me()["id"]

    # Two requests; the owner pages them newest first, one a page, with the Link headers.
    assert f.account_follow(owner_id)["requested"] is True
    assert s.account_follow(owner_id)["requested"] is True
    assert [a["id"] for a in o.follow_requests()] == [second_id, first_id]
    page = o.follow_requests(limit=1)
    assert [a["username"] for a in page] == [second]
    older = o.fetch_next(page)
    assert older is not None and [a["username"] for a in older] == [first]
    # pinhole's own list on the same path, for a pinhole session.
    mine = requests.get(
        base + "/api/v1/follow_requests", headers=pinhole_session(base, owner), timeout=10
    )
    assert mine.status_code == 200 and len(mine.json()["requests"]) == 2

    # Authorize one, reject the other: Relationships, and the requesters see the outcome.
    rel = o.follow_request_authorize(first_id)
    assert rel["id"] == first_id and rel["followed_by"] is True and rel["requested_by"] is False
    rel = o.follow_request_reject(second_id)
    assert rel["id"] == second_id and rel["followed_by"] is False
    assert rel["requested_by"] is False
    assert o.follow_requests() == []
    assert f.account_relationships(owner_id)[0]["following"] is True
    assert s.account_relationships(owner_id)[0]["requested"] is False
    with pytest.raises(MastodonNotFoundError):
        o.follow_request_authorize(second_id)  # no request pending any more

    # Favourites and bookmarks: the follower's likes and saves, newest post first, paged.
    statuses = [posted_photo(o, f"mine {i}", 30 + i) for i in range(3)]
    for st in statuses:
        until(_visible_probe(f, st["id"]), "the post to go live")
    f.status_favourite(statuses[0]["id"])
    f.status_favourite(statuses[2]["id"])
    f.status_bookmark(statuses[1]["id"])
    assert [x["id"] for x in f.favourites()] == [statuses[2]["id"], statuses[0]["id"]]
    first_page = f.favourites(limit=1)
    assert [x["id"] for x in first_page] == [statuses[2]["id"]]
    assert first_page[0]["favourited"] is True
    next_page = f.fetch_next(first_page)
    assert next_page is not None and [x["id"] for x in next_page] == [statuses[0]["id"]]
    assert [x["id"] for x in f.bookmarks()] == [statuses[1]["id"]]
    assert f.bookmarks()[0]["bookmarked"] is True
    assert s.favourites() == [] and s.bookmarks() == []
    # A deleted post leaves the list.
    o.status_delete(statuses[2]["id"])
    assert [x["id"] for x in f.favourites()] == [statuses[0]["id"]]

    # Conversations: the owner writes to the follower (their inbox); the rejected user
    # writes to the owner (a message request: not among the owner's conversations).
    sent = requests.post(
        base + "/api/v1/messages",
        json={"recipient_ids": [first_id], "client_id": "c-1", "text": "hello <b>you</b>"},
        headers=pinhole_session(base, owner),
        timeout=10,
    )
    assert sent.status_code == 201, sent.text
    thread_id = sent.json()["thread_id"]
    asked = requests.post(
        base + "/api/v1/messages",
        json={"recipient_ids": [owner_id], "client_id": "c-2", "text": "may I?"},
        headers=pinhole_session(base, second),
        timeout=10,
    )
    assert asked.status_code == 201, asked.text
    (conversation,) = f.conversations()
    assert conversation["id"] == thread_id and conversation["unread"] is True
    assert [a["id"] for a in conversation["accounts"]] == [owner_id]
    last = conversation["last_status"]
    assert last["visibility"] == "direct" and last["account"]["id"] == owner_id
    assert last["text"] == "hello <b>you</b>" and "&lt;b&gt;" in last["content"]
    assert [m["id"] for m in last["mentions"]] == [owner_id]
    read = f.conversations_read(thread_id)
    assert read["id"] == thread_id and read["unread"] is False
    assert f.conversations()[0]["unread"] is False
    assert [c["id"] for c in o.conversations()] == [thread_id]
    with pytest.raises(MastodonNotFoundError):
        s.conversations_read(thread_id)  # not a member


def _visible_probe(m: Mastodon, status_id: str) -> Callable[[], bool | None]:
    """For until(): True once the status is visible to `m` (live), else None."""

    def probe() -> bool | None:
        try:
            m.status(status_id)
        except MastodonNotFoundError:
            return None  # still processing: only its author sees it
        return True

    return probe
