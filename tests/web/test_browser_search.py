"""The web client's search screens in a real browser against a cluster started by
`pinhole up`: wren shares a photo with a hashtag and a place (name and coordinates) from the
new-post form; sid finds her by a misspelt username in the top bar's typeahead with the
keyboard alone and opens her profile; from her post, the hashtag link opens the hashtag
page and the place under her name opens the place page, each showing the post (Top and
Recent). The open typeahead, the full results page, the hashtag page and the place page
pass axe-core's rules; screenshots go with the others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.web.browser_kit import (
    PASSWORD,
    STEP_TIMEOUT_MS,
    _axe,
    _context,
    _photo_loaded,
    _png,
    _sign_up,
    expect,
)

AUTHOR = "wrenhollow"
SEEKER = "sidquarry"
TAG = "harbourlightsearch"
PLACE = "Old Harbour Steps"


def _share_with_place(page: Any, photo: Path) -> str:
    page.get_by_role("link", name="New post").click()
    page.get_by_label("Photos or a video").set_input_files(str(photo))
    page.get_by_label(f"Alt text for {photo.name}").fill("Boats at low tide")
    page.get_by_label("Caption").fill(f"Low tide at dawn #{TAG}")
    page.get_by_label("Place name").fill(PLACE)
    page.get_by_label("Latitude").fill("54.32123")
    page.get_by_label("Longitude").fill("-3.00456")
    page.get_by_role("button", name="Share").click()
    expect(page).to_have_url(re.compile(r"#/p/\d+$"), timeout=STEP_TIMEOUT_MS)
    return str(page.url.rsplit("/", 1)[1])


def _sign_in(page: Any, username: str) -> None:
    page.goto("/#/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="New post")).to_be_visible()


def _grid_has(page: Any, post_id: str) -> None:
    expect(page.locator(f'.grid li[data-post-id="{post_id}"]')).to_be_visible()
    _photo_loaded(page, "Boats at low tide")


@pytest.mark.timeout(180)
def test_typeahead_hashtag_and_place_pages(
    browser: Any, base_url: str, screens: Path, tmp_path: Path, csp_violations: list[str]
) -> None:
    wren_ctx = _context(browser, base_url, csp_violations)
    wren = wren_ctx.new_page()
    _sign_up(wren, AUTHOR)
    post_id = _share_with_place(wren, _png(tmp_path, "tide.png", 41))
    # The post's place shows under its author, a link to the place page.
    place_link = wren.get_by_role("link", name=PLACE)
    expect(place_link).to_have_attribute("href", re.compile(r"^#/places/\d+$"))

    sid_ctx = _context(browser, base_url, csp_violations)
    sid = sid_ctx.new_page()
    _sign_up(sid, SEEKER)
    # A typo ("wrenholow"), the keyboard alone: ↓ to the account, Enter opens it.
    box = sid.get_by_role("combobox", name="Search")
    box.click()
    box.press_sequentially("wrenholow", delay=20)
    expect(box).to_have_attribute("aria-expanded", "true")
    listbox = sid.get_by_role("listbox", name="Search suggestions")
    option = listbox.get_by_role("group", name="Accounts").get_by_role("option").first
    expect(option).to_have_accessible_name(AUTHOR)
    box.press("ArrowDown")
    expect(option).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", option.get_attribute("id") or "")
    sid.screenshot(path=str(screens / "search-typeahead.png"))
    box.press("Escape")
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(listbox).to_be_hidden()
    box.press("ArrowDown")  # opens the list again
    expect(option).to_be_visible()
    box.press("ArrowDown")
    box.press("Enter")
    expect(sid).to_have_url(re.compile(rf"#/u/{AUTHOR}$"))
    expect(sid.get_by_role("heading", name=AUTHOR, level=1)).to_be_visible()

    # A hashtag link in the caption opens the hashtag page, which shows the post.
    sid.goto(f"/#/p/{post_id}")
    sid.locator(".caption").get_by_role("link", name=f"#{TAG}").click()
    expect(sid.get_by_role("heading", name=f"#{TAG}", level=1)).to_be_visible()
    expect(sid.get_by_text("1 post", exact=True)).to_be_visible()
    _grid_has(sid, post_id)
    sid.get_by_role("button", name="Recent").click()
    expect(sid.get_by_role("list", name=f"Recent posts of #{TAG}")).to_be_visible()
    _grid_has(sid, post_id)
    sid.screenshot(path=str(screens / "search-hashtag.png"))

    # The place under the author's name opens the place page, which shows the post.
    sid.goto(f"/#/p/{post_id}")
    sid.get_by_role("link", name=PLACE).click()
    expect(sid.get_by_role("heading", name=PLACE, level=1)).to_be_visible()
    expect(sid.get_by_text("54.32, -3.00")).to_be_visible()  # rounded by the API
    _grid_has(sid, post_id)
    sid.screenshot(path=str(screens / "search-place.png"))
    place_path = sid.url.split("#", 1)[1]

    # Enter with no option active: the full results page, per kind.
    box = sid.get_by_role("combobox", name="Search")
    box.fill("harbour")
    box.press("Enter")
    expect(sid).to_have_url(re.compile(r"#/search\?q=harbour$"))
    expect(sid.get_by_role("heading", name="Results for “harbour”")).to_be_visible()
    sid.get_by_role("link", name="Hashtags").click()
    expect(sid.get_by_role("link", name=re.compile(rf"#{TAG}"))).to_be_visible()
    sid.get_by_role("link", name="Places").click()
    expect(sid.get_by_role("link", name=re.compile(PLACE))).to_have_attribute(
        "href", re.compile(r"^#/places/\d+$")
    )
    sid.screenshot(path=str(screens / "search-results.png"))
    wren_ctx.close()
    sid_ctx.close()

    # axe-core is injected as an inline script: a context of its own, without the policy.
    axe_ctx = browser.new_context(base_url=base_url, bypass_csp=True)
    page = axe_ctx.new_page()
    _sign_in(page, SEEKER)
    page.goto("/#/search?q=harbour&type=places")
    expect(page.get_by_role("link", name=re.compile(PLACE))).to_be_visible()
    found = _axe(page, "search results")
    page.goto(f"/#/tags/{TAG}")
    _grid_has(page, post_id)
    found += _axe(page, "hashtag page")
    page.goto(f"/#{place_path}")
    _grid_has(page, post_id)
    found += _axe(page, "place page")
    box = page.get_by_role("combobox", name="Search")
    box.fill("harbour")
    expect(page.get_by_role("group", name="Places").get_by_role("option")).to_have_count(1)
    box.press("ArrowDown")
    found += _axe(page, "typeahead")
    axe_ctx.close()
    assert not found, "\n".join(found)
