"""The web client's stories in a real browser, live over MQTT-over-WebSockets, against a
cluster started by `pinhole up`: ava posts a story and ben, who follows her, sees her in
his tray with the unseen ring without a reload; he opens it and the ring turns seen; his
reply reaches ava's thread with him; ava sees him among the story's viewers; a
close-friends story reaches ben (listed) and not cal (a follower, unlisted); a highlight
shows on ava's profile, opens in the viewer for ben, and is renamed and deleted. The tray,
the viewer and the highlights pass axe-core's rules; screenshots go with the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.web.browser_kit import (
    AXE,
    PASSWORD,
    _api,
    _axe,
    _context,
    _photo_loaded,
    _png,
    expect,
)

JSON: dict[str, str] = {"Content-Type": "application/json"}


def _account(base_url: str, username: str) -> tuple[str, str]:
    """(user id, session token) of a new account, through the API."""
    body = json.dumps({"username": username, "password": PASSWORD}).encode()
    user = _api(base_url, "POST", "/api/v1/accounts", body, JSON)
    token = _api(base_url, "POST", "/api/v1/sessions", body, JSON)["token"]
    return str(user["user_id"]), str(token)


def _follow(base_url: str, token: str, followee_id: str) -> None:
    body = json.dumps({"followee_id": followee_id}).encode()
    _api(base_url, "POST", "/api/v1/follows", body, {**JSON, "Authorization": f"Bearer {token}"})


def _sign_in(page: Any, username: str) -> None:
    page.goto("/#/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="New post")).to_be_visible()


def _tray(page: Any) -> Any:
    return page.get_by_role("list", name="Stories")


def _post_story(page: Any, path: Path, *, close_friends: bool = False) -> None:
    page.get_by_role("link", name="Home").click()
    _tray(page).get_by_role("link", name="Add to your story").click()
    expect(page.get_by_role("heading", name="New story")).to_be_visible()
    page.get_by_label("A photo or a video").set_input_files(str(path))
    if close_friends:
        page.get_by_label("Close friends only").check()
    page.get_by_role("button", name="Share to your story").click()
    expect(_tray(page).get_by_role("button", name="Your story")).to_be_visible()


def _viewer(page: Any) -> Any:
    return page.get_by_role("dialog")


@pytest.mark.timeout(180)
def test_a_story_reaches_the_tray_live_is_seen_replied_to_and_kept_in_a_highlight(
    browser: Any, base_url: str, screens: Path, tmp_path: Path, csp_violations: list[str]
) -> None:
    ava_id, _ = _account(base_url, "ava")
    _, ben_token = _account(base_url, "ben")
    _, cal_token = _account(base_url, "cal")
    _follow(base_url, ben_token, ava_id)
    _follow(base_url, cal_token, ava_id)
    ava_ctx, ben_ctx, cal_ctx = (_context(browser, base_url, csp_violations) for _ in range(3))
    ava, ben, cal = ava_ctx.new_page(), ben_ctx.new_page(), cal_ctx.new_page()
    _sign_in(ben, "ben")
    expect(_tray(ben).get_by_role("link", name="Your story: add one")).to_be_visible()
    _sign_in(ava, "ava")

    # ava posts a story; ben's open tray shows her with the unseen ring, without a reload.
    _post_story(ava, _png(tmp_path, "sunrise.png", 31))
    ring = _tray(ben).get_by_role("button", name="ava: new story")
    expect(ring).to_be_visible()
    expect(ring).to_have_attribute("data-state", "unseen")
    ben.screenshot(path=screens / "20-stories-tray.png")

    # He opens it (marked seen as it shows), pauses it, and replies.
    ring.click()
    viewer = _viewer(ben)
    expect(viewer).to_have_accessible_name("ava's stories")
    _photo_loaded(ben, "Story by ava")
    ben.keyboard.press("Space")
    expect(viewer.get_by_role("button", name="Play")).to_have_attribute("aria-pressed", "true")
    ben.screenshot(path=screens / "21-story-viewer.png")
    viewer.get_by_label("Reply to ava").fill("what a sunrise!")
    viewer.get_by_role("button", name="Send").click()
    expect(ben.locator("#status")).to_have_text("Reply sent to ava")
    ben.keyboard.press("Escape")
    expect(viewer).to_have_count(0)
    expect(_tray(ben).get_by_role("button", name="ava: seen")).to_have_attribute(
        "data-state", "seen"
    )

    # The reply is a message in ava's thread with ben, quoting the story (a request: she
    # does not follow him).
    ava.get_by_role("link", name="Messages").click()
    ava.get_by_role("link", name="Requests").click()
    ava.get_by_role("list", name="Message requests").get_by_role("link", name="ben").click()
    log = ava.get_by_role("log", name="Messages")
    expect(log.get_by_text("what a sunrise!")).to_be_visible()
    expect(log.get_by_text("Replied to a story")).to_be_visible()

    # ava lists ben as a close friend and posts a close-friends story.
    ava.get_by_role("link", name="Settings").click()
    ava.get_by_label("Add a close friend").fill("ben")
    ava.get_by_role("button", name="Add", exact=True).click()
    friends = ava.get_by_role("list", name="Close friends")
    expect(friends.get_by_role("link", name="ben")).to_be_visible()
    _post_story(ava, _png(tmp_path, "secret.png", 32), close_friends=True)

    # ben's ring is unseen again and his viewer opens on the new story, the second of two;
    # cal follows ava too but is not listed: her reel has the first story alone.
    expect(_tray(ben).get_by_role("button", name="ava: new story")).to_be_visible()
    _tray(ben).get_by_role("button", name="ava: new story").click()
    expect(_viewer(ben).get_by_text("Story 2 of 2")).to_be_attached()
    expect(_viewer(ben).locator(".story-bar")).to_have_count(2)
    ben.keyboard.press("Escape")
    _sign_in(cal, "cal")
    with cal.expect_response(lambda r: r.url.endswith("/seen")) as marked:
        _tray(cal).get_by_role("button", name="ava: new story").click()
    assert marked.value.ok, marked.value.status
    expect(_viewer(cal).get_by_text("Story 1 of 1")).to_be_attached()
    expect(_viewer(cal).locator(".story-bar")).to_have_count(1)
    cal_ctx.close()

    # ava opens her own stories: the first was seen by ben and cal; it moves on by itself.
    ava.get_by_role("link", name="Home").click()
    _tray(ava).get_by_role("button", name="Your story").click()
    mine = _viewer(ava)
    expect(mine.get_by_text("Story 1 of 2")).to_be_attached()
    ava.keyboard.press("Space")  # paused while she reads who saw it
    expect(mine.get_by_role("button", name="Play")).to_be_visible()
    expect(mine.get_by_role("button", name="Seen by 2")).to_be_visible()
    mine.get_by_role("button", name="Seen by 2").click()
    # ben's view (long since written in a batch) is in the list; cal's, a second old, may
    # still be queued (within story_views_flush_interval_ms): the count has it already.
    viewers = mine.get_by_role("list", name="Viewers")
    expect(viewers.get_by_role("link", name="ben")).to_be_visible()
    mine.get_by_role("button", name="Seen by 2").click()  # hides the list
    mine.get_by_role("button", name="Play").click()  # and it goes on by itself
    expect(mine.get_by_text("Story 2 of 2")).to_be_attached(timeout=15_000)
    mine.get_by_role("button", name="Close stories").click()
    expect(mine).to_have_count(0)

    # A highlight of the first story on ava's profile; ben opens it in the viewer.
    ava.get_by_role("link", name="Profile").click()
    ava.get_by_role("button", name="New highlight").click()
    ava.get_by_label("Title").fill("Mornings")
    picks = ava.get_by_role("list", name="Stories to keep")
    expect(picks.get_by_role("checkbox")).to_have_count(2)
    picks.get_by_role("checkbox").last.check()  # the oldest: the followers story
    ava.get_by_role("button", name="Add highlight").click()
    expect(ava.get_by_role("button", name="Highlight: Mornings")).to_be_visible()
    ben.goto("/#/u/ava")
    ben.get_by_role("button", name="Highlight: Mornings").click()
    expect(_viewer(ben)).to_have_accessible_name("Highlight: Mornings")
    _photo_loaded(ben, "Story by ava")
    ben.screenshot(path=screens / "22-highlight.png")
    ben.keyboard.press("Escape")

    # ava renames it, then deletes it.
    ava.get_by_role("button", name="Edit highlight Mornings").click()
    ava.get_by_label("Title").fill("Dawn")
    ava.get_by_role("button", name="Save highlight").click()
    expect(ava.get_by_role("button", name="Highlight: Dawn")).to_be_visible()
    ava.screenshot(path=screens / "23-profile-highlights.png")
    ava.get_by_role("button", name="Edit highlight Dawn").click()
    ava.once("dialog", lambda dialog: dialog.accept())
    ava.get_by_role("button", name="Delete highlight").click()
    expect(ava.get_by_role("button", name="New highlight")).to_be_visible()
    expect(ava.get_by_role("button", name="Highlight: Dawn")).to_have_count(0)

    # The screens pass axe (a context of its own runs it despite the page's policy).
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: scripts/bootstrap installs web/'s npm packages")
    ava.get_by_role("button", name="New highlight").click()
    expect(ava.get_by_role("list", name="Stories to keep").get_by_role("checkbox")).to_have_count(2)
    ava.get_by_label("Title").fill("Again")
    picks.get_by_role("checkbox").first.check()
    ava.get_by_role("button", name="Add highlight").click()
    expect(ava.get_by_role("button", name="Highlight: Again")).to_be_visible()
    axe_ctx = browser.new_context(base_url=base_url, bypass_csp=True)
    page = axe_ctx.new_page()
    _sign_in(page, "ben")
    expect(_tray(page).get_by_role("button", name="ava: seen")).to_be_visible()
    found = _axe(page, "tray")
    _tray(page).get_by_role("button", name="ava: seen").click()
    _photo_loaded(page, "Story by ava")
    page.keyboard.press("Space")
    expect(_viewer(page).get_by_role("button", name="Play")).to_be_visible()
    found += _axe(page, "viewer")
    page.keyboard.press("Escape")
    page.goto("/#/u/ava")
    expect(page.get_by_role("button", name="Highlight: Again")).to_be_visible()
    found += _axe(page, "profile highlights")
    page.goto("/#/stories/new")
    expect(page.get_by_role("heading", name="New story")).to_be_visible()
    found += _axe(page, "new story")
    axe_ctx.close()
    ava_ctx.close()
    ben_ctx.close()
    assert not found, "\n".join(found)
