"""The HTML email and the archive page rendered in a real headless Chromium, at phone (375 px) and
desktop-email (600 px) widths: nothing overflows horizontally, every link is there.

Chromium comes from Debian (`apt-get install chromium`, done by `.ci/run`); if it cannot start, the
test fails: it never skips. All network requests are aborted: the page is rendered from memory.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest

from veille.digest import build_digest, member_digest, write_digest
from veille.mail import message_bytes, render_email

from .digestdata import BASE, DOCS, SOURCES, WEEK, Doc, add_members, populate

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Error as e:
            pytest.fail(f"cannot start Chromium at {CHROMIUM} ({e}); install it with `apt-get install chromium`")
        yield chromium
        chromium.close()


def _render(browser, html: str, width: int) -> tuple[int, set[str]]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.route("**/*", lambda route: route.abort())
        page.set_content(html)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        hrefs = set(page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"))
        return scroll_width, hrefs
    finally:
        page.close()


LONG = Doc(
    "long", "gazette",
    "Anticonstitutionnellement" * 4 + " : un titre sans espace pour éprouver la mise en page",
    "Le lien https://www.collectivites-locales.gouv.fr/" + "tres-long-chemin-" * 12 + " ne doit pas déborder.",
    "", datetime(2026, 11, 25, 9, tzinfo=timezone.utc),
    {"inclusion": (4, ("inclusion",))})


@pytest.fixture
def rendered(store, settings, tmp_path):
    populate(store, [*DOCS, LONG])
    members = add_members(store)
    settings = settings.replace(digests_dir=str(tmp_path / "digests"), public_url=f"{BASE}/veille", section_cap=1)
    digest = build_digest(store, WEEK, settings, SOURCES)
    md = member_digest(digest, members["alice"])
    msg = email.message_from_bytes(message_bytes(render_email(md, settings)), policy=email.policy.default)
    folder = write_digest(digest, settings.digests_dir)
    expected = {e.item.url for e in md.headlines} | {s.url for e in md.headlines for s in e.item.sources}
    for section in md.sections:
        expected |= {e.item.url for e in section.entries} | {s.url for e in section.entries for s in e.item.sources}
    expected.discard(None)
    expected |= {f"{BASE}/veille/unsubscribe/{members['alice'].unsubscribe_token}", f"{BASE}/veille/digests/{WEEK}/"}
    return msg.get_body(("html",)).get_content(), (folder / "index.html").read_text(), expected, digest


@pytest.mark.parametrize("width", [375, 600])
def test_email_fits_and_keeps_every_link(browser, rendered, width):
    html, _, expected, _ = rendered
    scroll_width, hrefs = _render(browser, html, width)
    assert scroll_width <= width
    assert expected <= hrefs, expected - hrefs
    assert all(h.startswith(("http://", "https://")) for h in hrefs)


@pytest.mark.parametrize("width", [375, 600])
def test_archive_page_fits_and_lists_cut_items(browser, rendered, width):
    _, page, _, digest = rendered
    scroll_width, hrefs = _render(browser, page, width)
    assert scroll_width <= width
    cut = {i.url for s in digest.sections for i in s.cut if i.url}
    assert cut and cut <= hrefs
    assert {f"#{s.topic.id}" for s in digest.sections} <= hrefs
