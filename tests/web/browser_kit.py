"""What the browser tests share besides fixtures (tests/web/conftest.py): a browser context
that records CSP violations, signing up, finding a user, waiting for a photo, the
axe-core accessibility check."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from ops.up_cmds import demo_png
from tests.up_cluster import REPO

# Each step waits at most this long for the page (uploads wait for the media workers).
STEP_TIMEOUT_MS: Final = 30_000
PASSWORD: Final = "correct horse battery"
AXE: Final = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
# axe-core's WCAG 2.x A and AA rules (what Lighthouse's accessibility audit runs).
AXE_TAGS: Final = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
# A step waits as long for a condition as for an action (a sign-up hashes its password on a
# busy machine).
expect.set_options(timeout=STEP_TIMEOUT_MS)


def _context(browser: Any, base_url: str, csp_violations: list[str]) -> Any:
    # Reduced motion: photos appear without their fade, so screenshots show them.
    ctx = browser.new_context(
        base_url=base_url, viewport={"width": 900, "height": 1000}, reduced_motion="reduce"
    )
    ctx.set_default_timeout(STEP_TIMEOUT_MS)

    def console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            csp_violations.append(message.text)

    ctx.on("console", console)
    return ctx


@contextlib.contextmanager
def _users(
    browser: Any, base_url: str, csp_violations: list[str], *names: str
) -> Iterator[list[Any]]:
    """A page per name, each in a browser context of its own, signed up as that user;
    the contexts are closed after."""
    contexts = [_context(browser, base_url, csp_violations) for _ in names]
    try:
        pages = [c.new_page() for c in contexts]
        for page, name in zip(pages, names, strict=True):
            _sign_up(page, name)
        yield pages
    finally:
        for c in contexts:
            c.close()


def _sign_up(page: Any, username: str) -> None:
    page.goto("/#/signup")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("link", name="New post")).to_be_visible()
    expect(page.get_by_text("Nothing here yet")).to_be_visible()


def _photo_loaded(page: Any, alt: str) -> None:
    """Waits until an <img> with this alt text has decoded a photo from the router and
    replaced its blurhash placeholder (its frame is marked `loaded`)."""
    page.wait_for_function(
        "alt => [...document.querySelectorAll('img')]"
        ".some(i => i.alt === alt && i.complete && i.naturalWidth > 0 && i.currentSrc"
        " && (!i.closest('.photo') || i.closest('.photo').classList.contains('loaded')))",
        arg=alt,
        timeout=STEP_TIMEOUT_MS,
    )


def _find(page: Any, username: str) -> None:
    """Opens a profile from the top bar's search: its typeahead option, by the keyboard."""
    box = page.get_by_role("combobox", name="Search")
    box.fill(username)
    option = page.get_by_role("option", name=re.compile(rf"^{re.escape(username)}(\s|$)"))
    expect(option).to_be_visible()
    for _ in range(page.get_by_role("option").count()):
        if option.get_attribute("aria-selected") == "true":
            break
        box.press("ArrowDown")
    expect(option).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(page.get_by_role("heading", name=username, level=1)).to_be_visible()


def _png(tmp_path: Path, name: str, seed: int) -> Path:
    path = tmp_path / name
    path.write_bytes(demo_png(seed))
    return path


def _axe(page: Any, screen: str) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    return [
        f"{screen}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
    ]


def _api(base_url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(base_url + path, body, headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())
