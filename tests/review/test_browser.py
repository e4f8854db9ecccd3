"""The review page in a real browser: Debian's Chromium, headless, driven by Playwright.

Click through: filter, reject a tag (keyboard), add a label (completion field), mark a photo
reviewed, reload, and find every decision kept. The last test goes through a review of a
dozen drawn photos (tests/review/scenes.py); with MKT_TAG_SCREENSHOTS=1 it saves the
screenshots docs/review.md shows (docs/images/review-*.png).

No browser is downloaded: Playwright drives the system Chromium (`apt-get install chromium`,
as .ci/run does; or MKT_TAG_CHROMIUM=/path/to/chrome). A missing browser FAILS the test with
what to install: a browser test that skips itself quietly would never run. Where no browser
can be had, MKT_TAG_SKIP_BROWSER=1 skips it, saying so in pytest's summary.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mkt_tag.review import open_review
from tests.review.conftest import TAGS, serving
from tests.review.scenes import SCENES, write_review

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SCREENSHOTS = os.environ.get("MKT_TAG_SCREENSHOTS") == "1"


def chromium_path() -> str:
    for candidate in (os.environ.get("MKT_TAG_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.fail(
        "no Chromium for the browser tests: `apt-get install chromium` (Debian; .ci/run does), "
        "or set MKT_TAG_CHROMIUM=/path/to/chrome, or MKT_TAG_SKIP_BROWSER=1 to skip them"
    )


@contextmanager
def browser_tab() -> Iterator:
    """A tab of a headless Chromium, 1280 x 800; no JavaScript error may happen in it."""
    if os.environ.get("MKT_TAG_SKIP_BROWSER") == "1":
        pytest.skip("MKT_TAG_SKIP_BROWSER=1: the review page is not tested in a browser")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        yield tab
        context.close()
        browser.close()
        assert errors == [], errors  # no JavaScript error along the way


@pytest.fixture
def page(server) -> Iterator:
    with browser_tab() as tab:
        yield tab


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def thumbnails_shown(page) -> None:
    """Wait until every thumbnail on the page is loaded. (The page's Content-Security-Policy
    forbids eval, so no ``wait_for_function``: it would test a weaker page.)"""
    deadline = time.monotonic() + 15
    loaded = "images => images.every(i => i.complete && i.naturalWidth > 0)"
    while not page.locator(".photo img").evaluate_all(loaded):
        assert time.monotonic() < deadline, "thumbnails not shown"
        time.sleep(0.1)


def shot(page, name: str) -> None:
    """Save docs/images/review-``name``.png (with MKT_TAG_SCREENSHOTS=1) in 256 colours: a
    quarter of the bytes, and no difference to see on a page of flat colours and drawings."""
    if SCREENSHOTS:
        from PIL import Image

        IMAGES.mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        image = image.quantize(256, Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG)
        image.save(IMAGES / f"review-{name}.png", optimize=True)


def card(page, name: str):
    return page.locator(f'.photo:has(img[alt="{name}"])')


def names(page) -> list[str]:
    return page.locator(".photo img").evaluate_all("images => images.map(i => i.alt)")


def test_filter_reject_add_reload_and_find_the_decisions_kept(page, server, tagged):
    page.goto(server.url)
    expect(page.locator(".photo")).to_have_count(len(TAGS))
    thumbnails_shown(page)
    assert names(page) == ["c.jpg", "b.png", "a.jpg", "d.jpg"]  # borderline first
    assert "token" not in page.url  # out of the history once the cookie is set

    # Filter by label: the per-label view, lowest score first.
    page.fill("#filter-label", "dog")
    expect(page.locator(".photo")).to_have_count(2)
    assert names(page) == ["c.jpg", "a.jpg"]

    # Reject from the keyboard: Esc leaves the field, j to the first photo, x rejects the
    # filtered label.
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.keyboard.press("x")
    card(page, "c.jpg").locator('.tag.rejected[data-label="dog"]').wait_for()
    assert page.locator("#status").text_content() == "saved"

    # Add a label through the completion field.
    field = card(page, "a.jpg").locator("input.add")
    field.fill("sun")
    assert "sunset" in page.locator("#vocab option").evaluate_all("o => o.map(x => x.value)")
    field.fill("sunset")
    field.press("Enter")
    card(page, "a.jpg").locator('.tag.added[data-label="sunset"]').wait_for()

    # Mark a photo reviewed with d.
    card(page, "a.jpg").focus()
    page.keyboard.press("d")
    page.locator('.photo.reviewed:has(img[alt="a.jpg"])').wait_for()

    # Reload (the cookie, not the token, lets the page in): every decision is still there.
    page.reload()
    expect(page.locator(".photo")).to_have_count(len(TAGS))
    card(page, "c.jpg").locator('.tag.rejected[data-label="dog"]').wait_for()
    card(page, "a.jpg").locator('.tag.added[data-label="sunset"]').wait_for()
    assert card(page, "a.jpg").get_attribute("class") == "photo reviewed"
    rows = {
        Path(row["path"]).name: row
        for row in map(
            json.loads, (tagged["root"] / "tags.corrections.jsonl").read_text().splitlines()
        )
    }
    assert rows["c.jpg"] == {**rows["c.jpg"], "labels": [], "negatives": ["dog"], "unknown": "*"}
    assert sorted(rows["a.jpg"]["labels"]) == ["beach", "dog", "sunset"]
    assert rows["a.jpg"]["unknown"] == []  # reviewed


def test_label_search_and_the_per_label_view(page, server):
    page.goto(server.url)
    expect(page.locator(".photo")).to_have_count(len(TAGS))
    page.fill("#label-search", "SUN")
    expect(page.locator("#label-list button")).to_have_count(1)
    assert page.locator("#label-list button").inner_text().split() == ["sunset", "1"]
    page.fill("#label-search", "")
    page.locator("#label-list button", has_text="dog").click()
    expect(page.locator(".photo")).to_have_count(2)
    assert page.input_value("#filter-label") == "dog" and names(page) == ["c.jpg", "a.jpg"]
    thumbnails_shown(page)
    # Score range: only dog scores of at least 0.5 remain.
    page.fill("#score-low", "0.5")
    expect(page.locator(".photo")).to_have_count(1)
    assert names(page) == ["a.jpg"]
    page.fill("#score-low", "0")
    expect(page.locator(".photo")).to_have_count(2)
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()


def test_more_photos_come_a_page_at_a_time(page, server):
    page.goto(server.url)
    expect(page.locator(".photo")).to_have_count(len(TAGS))
    assert page.locator("#more").is_hidden()  # all shown: no button
    assert page.locator("#count").inner_text() == f"{len(TAGS)} photos"


# --- a review of drawn photos: what a person sees, and the screenshots of docs/review.md ----


@pytest.fixture
def showcase(tmp_path: Path, isolated_cache: Path) -> Iterator:
    """A dozen drawn photos (a sunset, a dog, a stop sign...) with plausible tags, served."""
    results, labels = write_review(tmp_path)
    with serving(open_review(results, labels), isolated_cache) as running:
        yield running


def decide(page, name: str, label: str, decision: str) -> None:
    card(page, name).get_by_role("button", name=f"{decision} {label}", exact=True).click()
    verdict = {"accept": "accepted", "reject": "rejected"}[decision]
    card(page, name).locator(f'.tag.{verdict}[data-label="{label}"]').wait_for()


def test_a_review_of_drawn_photos_from_grid_to_label_view(showcase, tmp_path):
    with browser_tab() as page:
        page.goto(showcase.url)
        expect(page.locator(".photo")).to_have_count(len(SCENES))
        thumbnails_shown(page)
        lowest = {name: min(scores.values()) for name, (_, scores) in SCENES.items()}
        assert names(page) == sorted(SCENES, key=lambda name: (lowest[name], name))
        # The header names the files; the full paths are in its tooltip.
        expect(page.locator("#files")).to_have_text("tags.csv → tags.corrections.jsonl")
        title = page.locator("#files").get_attribute("title")
        assert str(tmp_path / "tags.csv") in title
        assert str(tmp_path / "tags.corrections.jsonl") in title

        # A few decisions with the mouse: wrong tags out, a right one in, a label added, a
        # photo reviewed.
        decide(page, "IMG_2380.jpg", "sunset", "reject")
        decide(page, "IMG_2231.jpg", "stop sign", "reject")
        decide(page, "IMG_2113.jpg", "tree", "reject")
        field = card(page, "IMG_2113.jpg").locator("input.add")
        field.fill("sky")
        field.press("Enter")
        card(page, "IMG_2113.jpg").locator('.tag.added[data-label="sky"]').wait_for()
        decide(page, "IMG_2302.jpg", "flower", "reject")
        card(page, "IMG_2302.jpg").locator("button.done").click()
        page.locator('.photo.reviewed:has(img[alt="IMG_2302.jpg"])').wait_for()
        decide(page, "IMG_2204.jpg", "text", "accept")
        expect(page.locator("#summary")).to_have_text(
            f"{len(SCENES)} photos, 1 reviewed, 7 decisions"
        )
        expect(page.locator("#label-list button", has_text="flower")).to_contain_text("(1 ✗)")
        page.mouse.move(0, 0)  # no hover effect in the screenshot
        page.mouse.wheel(0, -2000)  # the filters in view
        shot(page, "grid")

        # The per-label view: every photo tagged dog, lowest dog score first; x rejects the
        # dog on the cat, the first photo, which has the focus.
        page.locator("#label-list button", has_text="dog").click()
        expect(page.locator(".photo")).to_have_count(3)
        assert names(page) == ["IMG_2118.jpg", "IMG_2162.jpg", "IMG_2113.jpg"]
        thumbnails_shown(page)
        page.keyboard.press("x")
        card(page, "IMG_2118.jpg").locator('.tag.rejected[data-label="dog"]').wait_for()
        expect(page.locator("#label-list button", has_text="dog")).to_contain_text("(1 ✗)")
        page.mouse.move(0, 0)
        shot(page, "label-view")

        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        shot(page, "keys")
        page.keyboard.press("Escape")

    rows = {
        Path(row["path"]).name: row
        for row in map(json.loads, (tmp_path / "tags.corrections.jsonl").read_text().splitlines())
    }
    assert set(rows) == {
        "IMG_2231.jpg", "IMG_2113.jpg", "IMG_2302.jpg", "IMG_2204.jpg", "IMG_2380.jpg",
        "IMG_2118.jpg",
    }  # fmt: skip
    assert rows["IMG_2113.jpg"]["labels"] == ["sky"] and rows["IMG_2113.jpg"]["negatives"] == [
        "tree"
    ]
    assert rows["IMG_2302.jpg"] == {
        **rows["IMG_2302.jpg"],
        "labels": ["pizza"],
        "negatives": ["flower"],
        "unknown": [],
    }
    assert rows["IMG_2118.jpg"]["negatives"] == ["dog"]
