"""A webhook's "Open in infersight" link opens its finding in a real browser (issue 30, item 7).

The link is built by the same function the alert outbox uses (daemon/alerts/formats.py
``ui_link``) over a store replayed from the H100 recording and served by ``infersight
serve``; Debian's chromium opens it and must show that finding: its range selected, its
entry active in the findings list, the flame graph of exactly that range.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest_ui import (
    CHROMIUM_ARGS,
    PageProblems,
    ServeProcess,
    chromium_path,
    query_of,
    replay_into,
    selection,
    sync_playwright,
    wait_timeline,
)

from infersight.daemon.alerts.formats import ui_link

pytestmark = pytest.mark.browser

FIXTURE = Path(__file__).parent / "fixtures" / "h100-scenario"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("webhook-link") / "scenario.duckdb"
    replay_into(FIXTURE, db)
    server = ServeProcess(db)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_the_webhook_link_opens_the_finding(browser, served):
    events = served.get_json("/api/events?from=0")["events"]
    ev = next(e for e in events if e["kind"] == "cpu_gpu_gap")
    link = ui_link(served.url, ev["start"], ev["end"], ev["gpu"], ev["id"])
    assert "#" not in link and parse_qs(urlsplit(link).query)["event"] == [ev["id"]]

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    problems = PageProblems(page)
    try:
        page.goto(link)
        wait_timeline(page)
        page.wait_for_function(
            f"() => Math.abs(+document.getElementById('flame-view').dataset.from - {ev['start']}) < 0.01 "
            "&& document.getElementById('flame-view').dataset.state === 'ready'")
        assert selection(page) == pytest.approx([ev["start"], ev["end"]], abs=1e-3)
        assert query_of(page)["event"] == [ev["id"]]
        active = page.locator(".finding.active")
        assert active.count() == 1 and ev["summary"][:40] in active.text_content()
        problems.assert_clean()
    finally:
        context.close()
