"""The web client in a real browser: Playwright driving Debian's Chromium (headless) against a
cluster started by `pinhole up`. Sign up, upload a photo (through a dropped connection) and
see it in the feed, follow another user and see their post, like and comment, a private
account's grid hidden from a non-follower until it approves the request. Screenshots of the
main screens go to the test run's temporary directory (printed at the end of the module).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ops.up_cmds import demo_png
from tests.web.browser_kit import (
    AXE,
    PASSWORD,
    STEP_TIMEOUT_MS,
    _api,
    _axe,
    _context,
    _find,
    _photo_loaded,
    _png,
    _sign_up,
    _users,
    expect,
)


def _upload(page: Any, photo: Path, *, alt: str, caption: str) -> None:
    page.get_by_role("link", name="New post").click()
    page.get_by_label("Photos or a video").set_input_files(str(photo))
    page.get_by_label(f"Alt text for {photo.name}").fill(alt)
    page.get_by_label("Caption").fill(caption)
    page.get_by_role("button", name="Share").click()
    expect(page).to_have_url(re.compile(r"#/p/\d+$"), timeout=STEP_TIMEOUT_MS)


def test_the_client_is_served_with_strict_headers(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/", timeout=10) as r:
        html = r.read().decode()
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache"
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "<script>" not in html and "http" not in html.replace('"https://', "")  # no CDN
    asset = re.search(r'src="(/assets/app-[A-Z2-7]{8}\.js)"', html)
    assert asset is not None, html
    with urllib.request.urlopen(base_url + asset.group(1), timeout=10) as r:
        assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for bad in ("/assets/app-AAAAAAAA.js", "/assets/..%2Findex.html", "/assets/app.js"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base_url + bad, timeout=10)
        assert e.value.code == 404
        assert json.loads(e.value.read())["error"]["code"] == "not_found"


@pytest.mark.timeout(240)
def test_sign_up_upload_follow_like_and_comment(
    browser: Any, base_url: str, screens: Path, tmp_path: Path, csp_violations: list[str]
) -> None:
    alice_ctx, bob_ctx = (
        _context(browser, base_url, csp_violations),
        _context(browser, base_url, csp_violations),
    )
    alice, bob = alice_ctx.new_page(), bob_ctx.new_page()
    _sign_up(bob, "bob")
    _sign_up(alice, "alice")
    alice.screenshot(path=screens / "01-empty-feed.png")

    # The first PATCH of the upload is cut off: tus-js-client resumes from the offset.
    dropped: list[str] = []

    def drop_first_patch(route: Any) -> None:
        if route.request.method == "PATCH" and not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    alice.route("**/api/v1/uploads/**", drop_first_patch)
    alice.get_by_role("link", name="New post").click()
    alice.screenshot(path=screens / "02-new-post.png")
    _upload(
        alice,
        _png(tmp_path, "dawn.png", 3),
        alt="a gradient of dawn colours",
        caption="first light #dawn with @bob",
    )
    assert dropped, "the upload never sent a PATCH"
    alice.get_by_role("link", name="Home").click()
    _photo_loaded(alice, "a gradient of dawn colours")
    post = alice.get_by_role("article", name="Post by alice")
    expect(post.get_by_role("link", name="#dawn")).to_have_attribute("href", "#/tags/dawn")
    expect(post.get_by_role("link", name="@bob")).to_have_attribute("href", "#/u/bob")
    # The blurhash placeholder painted under the photo (4x3 components from the API).
    assert post.locator("canvas.blur").count() == 1
    # AVIF and WebP sources over the ladder, one candidate per width (a 256 px photo's
    # 320, 640 and 1080 rungs are 256 wide: never upscaled).
    sources = post.locator("picture source")
    assert [sources.nth(i).get_attribute("type") for i in range(sources.count())] == [
        "image/avif",
        "image/webp",
    ]
    widths = re.findall(r" (\d+)w", sources.first.get_attribute("srcset") or "")
    assert widths == ["150", "256"], widths
    alice.screenshot(path=screens / "03-feed.png")

    # bob finds alice, follows her and sees her post in his feed.
    _find(bob, "alice")
    bob.get_by_role("button", name="Follow").click()
    expect(bob.get_by_role("button", name="Following")).to_be_visible()
    bob.get_by_role("link", name="Home").click()
    _photo_loaded(bob, "a gradient of dawn colours")
    post = bob.get_by_role("article", name="Post by alice")
    like = post.get_by_role("button", name="Like")
    like.click()
    expect(post.get_by_role("button", name="Liked")).to_have_attribute("aria-pressed", "true")
    expect(post.get_by_text("1 like", exact=True)).to_be_visible()
    post.get_by_role("link", name="comments").click()
    bob.get_by_label("Add a comment").fill("lovely light @alice")
    bob.get_by_role("button", name="Post comment").click()
    expect(bob.get_by_role("list", name="Comments").get_by_text("lovely light")).to_be_visible()
    expect(bob.get_by_role("link", name="1 comment", exact=True)).to_be_visible()
    _photo_loaded(bob, "a gradient of dawn colours")
    bob.screenshot(path=screens / "04-post.png", full_page=True)

    # alice is told, and answers in a reply.
    alice.get_by_role("link", name="Notifications").click()
    notes = alice.get_by_role("list", name="Notifications")
    expect(notes.get_by_text("bob liked your post")).to_be_visible()
    expect(notes.get_by_text("bob started following you")).to_be_visible()
    alice.screenshot(path=screens / "05-notifications.png")
    notes.get_by_text("commented").first.click()
    alice.get_by_role("button", name="Reply").click()
    alice.get_by_label("Add a comment").fill("thank you")
    alice.get_by_role("button", name="Post comment").click()
    alice.get_by_role("button", name="View replies (1)").click()
    expect(alice.get_by_text("thank you")).to_be_visible()

    _find(alice, "alice")
    _photo_loaded(alice, "a gradient of dawn colours")
    alice.screenshot(path=screens / "06-profile.png")
    alice_ctx.close()
    bob_ctx.close()


@pytest.mark.timeout(180)
def test_a_private_account_hides_its_grid_until_it_approves(
    browser: Any, base_url: str, screens: Path, tmp_path: Path, csp_violations: list[str]
) -> None:
    with _users(browser, base_url, csp_violations, "carol", "dave") as (carol, dave):
        carol.get_by_role("link", name="Settings").click()
        carol.get_by_label("Private account").check()
        carol.get_by_role("button", name="Save profile").click()
        expect(carol.get_by_text("Profile saved")).to_be_visible()
        carol.screenshot(path=screens / "07-settings.png", full_page=True)
        _upload(carol, _png(tmp_path, "harbour.png", 5), alt="a quiet harbour", caption="home")

        _find(dave, "carol")
        expect(dave.get_by_role("heading", name="This account is private")).to_be_visible()
        assert dave.get_by_role("img", name="a quiet harbour").count() == 0
        dave.screenshot(path=screens / "08-private-profile.png")
        dave.get_by_role("button", name="Follow").click()
        expect(dave.get_by_role("button", name="Requested")).to_be_visible()

        carol.goto("/#/requests")
        requests = carol.get_by_role("list", name="Follow requests")
        expect(requests.get_by_role("link", name="dave")).to_be_visible()
        requests.get_by_role("button", name="Approve").click()
        expect(carol.get_by_text("dave now follows you")).to_be_visible()

        # dave signs out and in again with the keyboard alone.
        dave.get_by_role("button", name="Sign out").click()
        expect(dave.get_by_role("heading", name="Sign in to pinhole")).to_be_visible()
        dave.get_by_label("Username").focus()
        dave.keyboard.type("dave")
        dave.keyboard.press("Tab")
        dave.keyboard.type(PASSWORD)
        dave.keyboard.press("Enter")
        expect(dave.get_by_role("link", name="New post")).to_be_visible()
        _find(dave, "carol")
        expect(dave.get_by_role("button", name="Following")).to_be_visible()
        _photo_loaded(dave, "a quiet harbour")


@pytest.mark.timeout(180)
def test_settings_avatar_password_sessions_and_a_block(
    browser: Any, base_url: str, screens: Path, tmp_path: Path, csp_violations: list[str]
) -> None:
    with _users(browser, base_url, csp_violations, "erin", "frank") as (erin, frank):
        _find(frank, "erin")
        frank.get_by_role("button", name="Follow").click()
        expect(frank.get_by_role("button", name="Following")).to_be_visible()

        erin.get_by_role("link", name="Settings").click()
        erin.get_by_label("New picture").set_input_files(str(_png(tmp_path, "me.png", 7)))
        erin.get_by_role("button", name="Upload").click()
        expect(erin.get_by_text("Profile picture changed")).to_be_visible()
        _photo_loaded(erin, "erin's profile picture")
        erin.get_by_label("Current password").fill(PASSWORD)
        erin.get_by_label("New password").fill("a new horse battery")
        erin.get_by_role("button", name="Change password").click()
        expect(erin.get_by_text("Password changed")).to_be_visible()
        expect(erin.get_by_text("(this one)")).to_be_visible()
        erin.screenshot(path=screens / "09-settings-avatar.png", full_page=True)

        _find(erin, "erin")
        erin.get_by_role("link", name="followers").click()
        expect(erin.get_by_role("link", name="frank")).to_be_visible()
        _find(erin, "frank")
        erin.on("dialog", lambda dialog: dialog.accept())
        erin.get_by_role("button", name="Block").click()
        expect(erin.get_by_role("button", name="Unblock")).to_be_visible()

        frank.reload()  # erin's profile, now hidden from frank as if absent
        expect(frank.get_by_role("heading", name="Not found")).to_be_visible()


@pytest.mark.timeout(180)
def test_the_main_screens_pass_the_axe_accessibility_rules(
    browser: Any, base_url: str, tmp_path: Path
) -> None:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: scripts/bootstrap installs web/'s npm packages")
    # axe is injected as a script: this context alone lets the page run it despite the CSP.
    ctx = browser.new_context(base_url=base_url, bypass_csp=True)
    ctx.set_default_timeout(STEP_TIMEOUT_MS)
    page = ctx.new_page()
    page.goto("/#/signin")
    expect(page.get_by_role("heading", name="Sign in to pinhole")).to_be_visible()
    found = _axe(page, "sign in")
    _sign_up(page, "grace")
    page.get_by_role("link", name="New post").click()
    expect(page.get_by_role("heading", name="New post")).to_be_visible()
    found += _axe(page, "new post")
    _upload(page, _png(tmp_path, "field.png", 11), alt="a field at noon", caption="#noon")
    _photo_loaded(page, "a field at noon")
    found += _axe(page, "post")
    page.get_by_role("link", name="Home").click()
    _photo_loaded(page, "a field at noon")
    found += _axe(page, "feed")
    _find(page, "grace")
    found += _axe(page, "profile")
    for link, screen in (("Notifications", "notifications"), ("Settings", "settings")):
        page.get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", name=link, level=1)).to_be_visible()
        found += _axe(page, screen)
    ctx.close()
    assert not found, "\n".join(found)


def _post_through_the_api(base_url: str, token: str, seed: int) -> None:
    """One post of one fresh photo (the feed shows it while its media is processing)."""
    boundary = f"pinhole-test-{seed}"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + demo_png(seed, 64)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    auth = {"Authorization": f"Bearer {token}"}
    media = _api(
        base_url,
        "POST",
        "/api/v1/media/upload",
        form,
        {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    post = json.dumps({"media_ids": [media["media_id"]], "caption": f"post {seed}"}).encode()
    _api(base_url, "POST", "/api/v1/posts", post, {**auth, "Content-Type": "application/json"})


@pytest.mark.timeout(180)
def test_the_feed_loads_the_next_page_as_it_scrolls(
    browser: Any, base_url: str, csp_violations: list[str]
) -> None:
    page_size, posts = 10, 13  # web/src/views/feed.js PAGE_SIZE: two pages
    ctx = _context(browser, base_url, csp_violations)
    page = ctx.new_page()
    _sign_up(page, "ivan")
    token = page.evaluate("localStorage.getItem('pinhole.token')")
    for seed in range(posts):
        _post_through_the_api(base_url, token, 100 + seed)
    page.reload()
    articles = page.get_by_role("article")
    expect(articles).to_have_count(page_size)
    expect(page.get_by_text("You're all caught up.")).to_have_count(0)
    articles.nth(page_size - 1).scroll_into_view_if_needed()
    expect(articles).to_have_count(posts)
    expect(page.get_by_text("You're all caught up.")).to_be_visible()
    # Newest first, none repeated.
    captions = [c.split(" ", 1)[1] for c in page.locator(".caption").all_inner_texts()]
    assert captions == [f"post {100 + seed}" for seed in reversed(range(posts))], captions
    ctx.close()
