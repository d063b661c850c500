"""The UI for a person on call, in a real browser (Debian's chromium through Playwright):
compact findings grouped by cause with a filter and evidence in words; a finding opening
its culprit's thread; pure waits hidden by default; live refresh that pauses while the user
selects or zooms and marks stale data; the health tab with a live agent whose py-spy may not
attach; the sandwich view, search in the diff, time-shift baselines, tables that follow the
zoom; a stale link that says so.

The tests that pass through the README's tour save its screenshots: into test-artifacts/tour/
always, and into web/static/tour/ (what the README shows) when INFERSIGHT_TOUR names that
folder (``make tour``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from conftest_ui import (  # noqa: F401 (browser, labels, page, scenario, shifted, young: fixtures)
    ARTIFACTS,
    SHIFT_DAY,
    browser,
    drag_select,
    finding_row,
    hottest_functions,
    labels,
    matched_share,
    open_recording,
    page,
    phase,
    query_of,
    scenario,
    shifted,
    timeline_geometry,
    tooltip_text,
    wait_timeline,
    wait_view,
    young,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).parent / "programs"
TOUR_MAX_BYTES = 200_000


def save_tour(page, name: str, selector: str | None = None) -> Path:
    """A screenshot for the README's tour (viewport or one element), kept small."""
    folder = ARTIFACTS / "tour"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(path), animations="disabled")
    size = path.stat().st_size
    assert size < TOUR_MAX_BYTES, f"{name} is {size} bytes: the tour's images stay under {TOUR_MAX_BYTES}"
    dest = os.environ.get("INFERSIGHT_TOUR")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(dest) / name)
    return path


def events_of(server, labels) -> list[dict]:
    return server.get_json(f"/api/events?from={labels[0]['t0'] - 5}&to={labels[-1]['t1'] + 5}")["events"]


def rows_shown(page) -> list[str]:
    return page.eval_on_selector_all("#findings-list .finding", "(els) => els.map((e) => e.dataset.id)")


def fmt_num(v: float) -> str:
    """dom.js's fmtNum for 1 <= v < 100 (the GPU-seconds of the recording's findings)."""
    assert 1 <= v < 100
    return f"{round(v, 1):g}"


def cause(ev: dict) -> tuple[str, str]:
    """The group a finding belongs in, computed from the API (not from the page)."""
    foreign = ev["evidence"].get("foreign_processes") or []
    if foreign and (not ev["top_frames"] or ev["kind"] != "cpu_gpu_gap"):
        return ev["kind"], f"pid {foreign[0]['pid']}"
    return ev["kind"], ev["top_frames"][0]["frame"] if ev["top_frames"] else ev["class"]


# -- findings ----------------------------------------------------------------------------------

def test_findings_are_compact_rows_grouped_by_cause_and_filterable(page, scenario, labels):
    events = events_of(scenario, labels)
    open_recording(page, scenario, labels)
    assert sorted(rows_shown(page)) == sorted(e["id"] for e in events)
    heights = page.eval_on_selector_all("#findings-list .finding", "(els) => els.map((e) => e.getBoundingClientRect().height)")
    assert max(heights) < 32, f"one line per finding: {heights}"
    cells = page.eval_on_selector(".finding .frow", "(r) => [...r.children].map((c) => c.className)")
    assert cells == ["ftime", "fgpu", "fclass", "fculprit mono", "flost"]

    # grouped by cause: one group per (kind, culprit code or neighbour), the most GPU time lost first
    groups = page.eval_on_selector_all("#findings-list .fgroup", """(els) => els.map((g) => ({
        cause: g.dataset.cause, kind: g.dataset.kind, rows: [...g.querySelectorAll('.finding')].map((r) => r.dataset.id)}))""")
    expected: dict[tuple[str, str], set[str]] = {}
    for ev in events:
        expected.setdefault(cause(ev), set()).add(ev["id"])
    assert len(groups) == len(expected)
    for g in groups:
        key = next(k for k in expected if k[0] == g["kind"] and g["cause"].startswith(k[1]))
        assert set(g["rows"]) == expected[key], g
    lost = [sum(e["evidence"].get("lost_gpu_s") or 0 for e in events if e["id"] in g["rows"]) for g in groups]
    assert lost == sorted(lost, reverse=True), "the group that cost most GPU time comes first"
    gap = next(e for e in events if e["kind"] == "cpu_gpu_gap" and e["evidence"].get("lost_gpu_s"))
    row = finding_row(page, gap["id"])
    assert row.locator(".flost").text_content() == fmt_num(gap["evidence"]["lost_gpu_s"])
    assert row.locator(".fgpu").text_content() == str(gap["gpu"])
    assert row.locator(".fculprit").text_content() == gap["top_frames"][0]["frame"]

    # filter by text (in the URL, so a link keeps it) and by kind
    unfused = [e["id"] for e in events if e["top_frames"] and e["top_frames"][0]["frame"] == "Core.sample_unfused"]
    assert unfused and len(unfused) < len(events)     # the filter has something to keep and to drop
    page.fill("#findings-filter", "sample_unfused")
    page.wait_for_function(f"() => document.querySelectorAll('#findings-list .finding').length === {len(unfused)}")
    assert sorted(rows_shown(page)) == sorted(unfused)
    assert query_of(page)["fq"] == ["sample_unfused"]
    assert page.text_content("#findings-count") == f"{len(unfused)} of {len(events)}"
    page.fill("#findings-filter", "")
    page.select_option("#findings-kind", "util_throughput_mismatch")
    page.wait_for_function("() => document.querySelectorAll('#findings-list .finding').length === 1")
    assert query_of(page)["fkind"] == ["util_throughput_mismatch"]
    page.select_option("#findings-kind", "")
    page.wait_for_function(f"() => document.querySelectorAll('#findings-list .finding').length === {len(events)}")
    page.problems.assert_clean()


RAW_KEYS = ("own_cpu_pct_by_pid", "sm_util_mean", "lost_gpu_s", "gpu_idle_pct", "requests_waiting_mean", "class_seconds")


def test_evidence_reads_in_words_with_units(page, scenario, labels):
    events = events_of(scenario, labels)
    gap = next(e for e in events if e["kind"] == "cpu_gpu_gap" and e["class"] == "host_bound")
    open_recording(page, scenario, labels)
    finding_row(page, gap["id"]).click()
    wait_view(page, "flame")
    pairs = dict(page.eval_on_selector_all(".finding.active .evidence dt", "(els) => els.map((e) => [e.textContent, e.nextElementSibling.textContent])"))
    assert pairs["GPU time lost"] == f"{fmt_num(gap['evidence']['lost_gpu_s'])} GPU-s"
    assert pairs["GPU idle"].endswith("%") and pairs["SM activity, mean"].endswith("%")
    assert pairs["Culprit"].startswith(f"{gap['evidence']['culprit']['role']} pid {gap['evidence']['culprit']['pid']}, thread MainThread")
    assert "% of a core" in pairs["CPU on own work"] and pairs["Lasted"].endswith(" s")
    assert "host bound" in pairs["Time per class"]
    text = page.text_content(".finding.active .evidence")
    assert not any(k in text for k in RAW_KEYS), text

    # a key the UI does not know (the analysis grows) is still shown, in words with its unit
    mismatch = next(e for e in events if e["kind"] == "util_throughput_mismatch")
    finding_row(page, mismatch["id"]).click()
    page.wait_for_function(f"() => document.querySelector('.finding.active').dataset.id === {json.dumps(mismatch['id'])}")
    pairs = dict(page.eval_on_selector_all(".finding.active .evidence dt", "(els) => els.map((e) => [e.textContent, e.nextElementSibling.textContent])"))
    assert pairs["Tokens generated"].endswith("tokens/s") and "GPU activity rose" in pairs
    assert "pid 647" in pairs["Other processes on the GPU"]
    from_page = page.evaluate("""async () => {
        const { evidenceRows } = await import('/static/evidence.js');
        return evidenceRows({ episode_s: 75, throttle_share: 0.25, remedies: ['add an API server', 'batch fewer'],
                              neighbour_bytes: 3 * 2 ** 30 });
    }""")
    assert [r[:2] for r in from_page] == [["Episode", "1 min 15 s"], ["Throttle", "25%"],
                                          ["Remedies", "add an API server; batch fewer"], ["Neighbour", "3.0 GiB"]]
    page.problems.assert_clean()


def test_a_stale_finding_link_says_so(page, scenario):
    page.goto(f"{scenario.url}/?event=cpu_gpu_gap:nowhere:0:1")
    wait_timeline(page)
    notice = page.locator("#notice")
    assert notice.is_visible() and "is not stored" in notice.text_content()
    assert "event" not in query_of(page)
    page.wait_for_timeout(300)
    assert notice.is_visible(), "the timeline's load does not clear it"
    notice.get_by_role("button", name="dismiss").click()
    assert not notice.is_visible()
    page.problems.assert_clean(allow=("404 (Not Found)",))   # the page asked for the finding


# -- the flame graph: waits, culprit, zoom, sandwich ---------------------------------------------

def test_waits_are_hidden_by_default_and_one_click_shows_them(page, shifted):
    now = shifted.facts["now"]
    page.goto(f"{shifted.url}/?from={now}&to={now + 120}")
    wait_view(page, "flame")
    assert page.get_attribute("#flame-view", "data-waits") == "hide"
    assert "_PollLikeSelector.select" not in hottest_functions(page)
    assert hottest_functions(page)[0] == "decode_new"
    assert page.text_content("#flame-filter-waits").startswith("Pure waits hidden")
    # one click shows them: the HTTP thread's sleep is 7 of every 13 samples
    page.locator("#flame-filter-waits button").click()
    page.wait_for_function("() => document.getElementById('flame-view').dataset.waits === 'show' "
                           "&& document.getElementById('flame-view').dataset.state === 'ready'")
    assert query_of(page)["waits"] == ["show"]
    assert hottest_functions(page)[0] == "_PollLikeSelector.select"
    # weighted by GPU idle time, the default hides them too
    page.goto(f"{shifted.url}/?from={now}&to={now + 120}&weight=gpu_idle")
    wait_view(page, "flame")
    assert hottest_functions(page) == ["decode_new"]
    tree = shifted.get_json(f"/api/flamegraph?from={now}&to={now + 120}&weight=gpu_idle&waits=hide")
    assert float(page.get_attribute("#flame-view", "data-total")) == pytest.approx(tree["total"])
    page.select_option("#f-waits", "only")
    page.wait_for_function("() => document.getElementById('flame-view').dataset.waits === 'only' "
                           "&& document.getElementById('flame-view').dataset.state === 'ready'")
    assert hottest_functions(page) == ["_PollLikeSelector.select"]
    page.problems.assert_clean()


def subtree_names(tree: dict, path: list[str]) -> set[str]:
    node = tree
    for name in path:
        node = next(c for c in node["children"] if c["name"] == name)
    out, stack = set(), [node]
    while stack:
        n = stack.pop()
        out.add(n["name"])
        stack += n["children"]
    return out


def click_frame(page, canvas: str, name: str, rows: int = 14) -> list[str]:
    """Click the first frame called ``name`` down the canvas's widest column; returns the focus path."""
    box = page.locator(canvas).bounding_box()
    for row in range(rows):
        for frac in (0.05, 0.3, 0.6, 0.9):
            page.mouse.move(box["x"] + box["width"] * frac, box["y"] + row * 18 + 9)
            if tooltip_text(page).startswith(name):
                page.mouse.click(box["x"] + box["width"] * frac, box["y"] + row * 18 + 9)
                return [n for n in json.loads(query_of(page).get("focus", ["[]"])[0])]
    raise AssertionError(f"no frame {name} in {canvas}")


def test_the_tables_follow_the_zoom(page, scenario, labels):
    t0, t1 = phase(labels, "host_bound")
    b0, b1 = phase(labels, "healthy")
    open_recording(page, scenario, labels, f"&sel={t0:.3f}-{t1:.3f}")
    wait_view(page, "flame")
    assert page.get_attribute("#flame-hot-scope", "data-scope") == ""
    whole = hottest_functions(page)
    assert "synchronize" in whole
    path = click_frame(page, "#flame-canvas", "Arrivals.due")
    assert path[-1] == "Arrivals.due"
    assert page.get_attribute("#flame-hot-scope", "data-scope") == "Arrivals.due"
    tree = scenario.get_json(f"/api/flamegraph?from={t0}&to={t1}&waits=hide")
    inside = subtree_names(tree, path)
    zoomed = hottest_functions(page)
    assert zoomed and set(zoomed) <= inside and zoomed != whole
    assert "synchronize" not in zoomed, "the engine step's GPU wait is outside the arrivals"
    page.click("#flame-reset")
    assert page.get_attribute("#flame-hot-scope", "data-scope") == ""

    # the diff's table too
    page.goto(f"{scenario.url}/?from={labels[0]['t0'] - 2}&to={labels[-1]['t1'] + 2}&sel={t0:.3f}-{t1:.3f}"
              f"&base={b0:.3f}-{b1:.3f}&tab=diff")
    wait_view(page, "diff")
    names = page.eval_on_selector_all("#diff-table .change-row .fn-name", "(els) => els.map((e) => e.textContent)")
    assert names[0] == "tokenize_slow_python" and "synchronize" in names
    click_frame(page, "#diff-canvas", "Arrivals.due")
    page.wait_for_function("() => document.getElementById('diff-table-scope').dataset.scope === 'Arrivals.due'")
    diff = scenario.get_json(f"/api/diff?a_from={b0}&a_to={b1}&b_from={t0}&b_to={t1}&waits=hide")
    inside = subtree_names(diff, path)
    names = page.eval_on_selector_all("#diff-table .change-row .fn-name", "(els) => els.map((e) => e.textContent)")
    assert names and set(names) <= inside and "synchronize" not in names
    page.problems.assert_clean()


def sandwich_of(tree: dict, name: str) -> tuple[float, int]:
    """(inclusive value of the outermost calls of ``name``, nodes of its callers tree)."""
    total, callers = 0.0, {()}
    stack = [(tree, ())]
    while stack:
        node, path = stack.pop()
        if node["name"] == name and path and name not in [p for p in path]:
            total += node["value"]
            chain = tuple(reversed(path[1:]))
            callers |= {chain[:k] for k in range(1, len(chain) + 1)}
        stack += [(c, path + (node["name"],)) for c in node["children"]]
    return total, len(callers)


def test_sandwich_shows_callers_and_callees(page, scenario, labels):
    open_recording(page, scenario, labels)
    wait_view(page, "flame")
    hot = hottest_functions(page)
    assert "synchronize" in hot
    page.locator("#flame-hot .hot-row").nth(hot.index("synchronize")).locator(".hot-sandwich").click()
    wait_view(page, "sandwich")
    assert query_of(page)["tab"] == ["sandwich"] and json.loads(query_of(page)["fn"][0])[0] == "synchronize"
    assert page.get_attribute("#sandwich-view", "data-state") == "ready"
    f, t = float(query_of(page)["from"][0]), float(query_of(page)["to"][0])
    tree = scenario.get_json(f"/api/flamegraph?from={f}&to={t}&waits=hide")
    total, caller_nodes = sandwich_of(tree, "synchronize")
    assert float(page.get_attribute("#sandwich-view", "data-total")) == pytest.approx(total)
    assert int(page.get_attribute("#sandwich-callers", "data-nodes")) == caller_nodes
    # callers grow upwards from the function: its row is the bottom one, its caller above it
    box = page.locator("#sandwich-callers").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] - 9)
    assert tooltip_text(page).startswith("synchronize")
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] - 27)
    assert tooltip_text(page).startswith("Core.step")
    save_tour(page, "sandwich.png", ".analysis-panel")

    # shift+click on a flame graph frame opens its sandwich
    page.click("#tab-flame")
    wait_view(page, "flame")
    canvas = page.locator("#flame-canvas").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.click(canvas["x"] + 10, canvas["y"] + 18 + 9)
    page.keyboard.up("Shift")
    wait_view(page, "sandwich")
    assert json.loads(query_of(page)["fn"][0])[0] == json.loads(page.get_attribute("#sandwich-view", "data-fn"))[0]
    page.problems.assert_clean()


# -- the diff: search and baselines ----------------------------------------------------------------

def diff_shares(tree: dict, text: str) -> tuple[float, float]:
    a = b = 0.0
    stack = list(tree["children"])
    while stack:
        n = stack.pop()
        if text in n["name"].lower() or text in (n.get("file") or "").lower():
            a, b = a + n["a_share"], b + n["b_share"]
        else:
            stack += n["children"]
    return a, b


def test_search_in_the_diff(page, scenario, labels):
    h0, h1 = phase(labels, "host_bound")
    b0, b1 = phase(labels, "healthy")
    open_recording(page, scenario, labels, f"&sel={h0:.3f}-{h1:.3f}&base={b0:.3f}-{b1:.3f}&tab=diff")
    wait_view(page, "diff")
    save_tour(page, "diff.png", ".analysis-panel")
    page.fill("#diff-search", "synchronize")
    page.wait_for_function("() => document.getElementById('diff-search-result').textContent.includes('→')")
    assert query_of(page)["q"] == ["synchronize"]
    diff = scenario.get_json(f"/api/diff?a_from={b0}&a_to={b1}&b_from={h0}&b_to={h1}&waits=hide")
    a, b = diff_shares(diff, "synchronize")
    assert float(page.get_attribute("#diff-search-result", "data-a")) == pytest.approx(a, abs=1e-6)
    assert float(page.get_attribute("#diff-search-result", "data-b")) == pytest.approx(b, abs=1e-6)
    assert a - b > 0.3, "waiting on the GPU shrank when the tokenizer starved it"
    names = page.eval_on_selector_all("#diff-table .change-row .fn-name", "(els) => els.map((e) => e.textContent)")
    assert names and all("synchronize" in n for n in names)
    # the flame graph tab searches the same text
    page.click("#tab-flame")
    wait_view(page, "flame")
    assert page.input_value("#flame-search") == "synchronize"
    page.problems.assert_clean()


def test_time_shift_baselines(page, shifted):
    now, restart = shifted.facts["now"], shifted.facts["restart"]
    page.goto(f"{shifted.url}/?from={now - 600}&to={now + 180}&sel={now}-{now + 60}&tab=diff")
    page.wait_for_function("() => document.getElementById('diff-view').dataset.state === 'no-baseline'")
    for name in ("before", "yesterday", "restart"):
        assert page.is_enabled(f"#base-presets [data-base={name}]"), name

    page.click("#base-presets [data-base=yesterday]")
    wait_view(page, "diff")
    assert [float(x) for x in query_of(page)["base"][0].split("-")] == [now - SHIFT_DAY, now - SHIFT_DAY + 60]
    assert page.get_attribute("#base-presets [data-base=yesterday]", "aria-pressed") == "true"
    changes = rows(page)
    assert changes["decode_yesterday"] < -0.5 and changes["decode_new"] > 0.5

    page.click("#base-presets [data-base=restart]")
    wait_view(page, "diff")
    assert [float(x) for x in query_of(page)["base"][0].split("-")] == [restart - 60, restart]
    changes = rows(page)
    assert changes["decode_old"] < -0.5 and changes["decode_new"] > 0.5 and "decode_yesterday" not in changes

    # yesterday's data does not reach back a day before it: that baseline is refused, and says why
    page.goto(f"{shifted.url}/?from={now - SHIFT_DAY - 600}&to={now - SHIFT_DAY + 600}"
              f"&sel={now - SHIFT_DAY}-{now - SHIFT_DAY + 60}&tab=diff")
    page.wait_for_function("() => document.getElementById('diff-view').dataset.state === 'no-baseline'")
    assert not page.is_enabled("#base-presets [data-base=yesterday]")
    assert "no data" in page.get_attribute("#base-presets [data-base=yesterday]", "title")
    assert not page.is_enabled("#base-presets [data-base=restart]")
    assert "no engine restart" in page.get_attribute("#base-presets [data-base=restart]", "title")
    page.problems.assert_clean()


def rows(page) -> dict[str, float]:
    return dict(page.eval_on_selector_all("#diff-table .change-row", """(els) => els.map((e) => [
        e.querySelector('.fn-name').textContent, +e.dataset.delta])"""))


# -- live refresh ---------------------------------------------------------------------------------

def loads(page) -> int:
    return int(page.get_attribute("#timeline", "data-loads") or 0)


def live_state(page) -> str:
    return page.get_attribute("#live-status", "data-state")


def test_live_refresh_pauses_while_selecting_and_zooming(page, young):
    page.goto(f"{young.url}/?live=5m&refresh=1")
    wait_timeline(page)
    assert live_state(page) == "live"
    n = loads(page)
    page.wait_for_function(f"() => +document.getElementById('timeline').dataset.loads >= {n + 2}", timeout=10_000)

    # while the mouse button is down on the timeline, nothing reloads under it
    geo = timeline_geometry(page)
    lane = next(t for t in geo["layout"] if t["kind"] == "activity")
    y = geo["y"] + lane["y"] + lane["h"] / 2
    x0 = geo["x"] + geo["left"] + 0.3 * (geo["right"] - geo["left"])
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x0 + 40, y)
    page.wait_for_function("() => document.getElementById('live-status').dataset.state === 'paused'")
    held = loads(page)
    page.wait_for_timeout(2500)
    assert loads(page) == held
    page.mouse.move(x0 + 120, y)
    page.mouse.up()
    assert "sel" in query_of(page)
    # a selection keeps it paused, and says so, with one click back to live
    page.wait_for_timeout(2500)
    assert loads(page) == held and live_state(page) == "paused"
    assert "range is selected" in page.text_content("#live-status")
    page.click("#live-resume")
    assert "sel" not in query_of(page) and query_of(page)["live"] == ["5m"]
    page.wait_for_function(f"() => +document.getElementById('timeline').dataset.loads >= {held + 2}", timeout=10_000)
    assert live_state(page) == "live"

    # zooming fixes the range: paused until "Back to live"
    page.click("#zoom-in")
    assert "live" not in query_of(page)
    wait_timeline(page)
    held = loads(page)
    page.wait_for_timeout(2500)
    assert loads(page) == held and live_state(page) == "paused"
    assert "zoomed" in page.text_content("#live-status")
    page.click("#live-resume")
    assert query_of(page)["live"] == ["5m"]
    assert live_state(page) == "live"
    page.problems.assert_clean()


def test_refresh_is_on_by_default_and_stale_data_is_marked(page, young):
    page.goto(f"{young.url}/?live=5m")
    wait_timeline(page)
    assert page.input_value("#refresh") == "10" and "refresh" not in query_of(page)
    assert live_state(page) == "live" and "every 10 s" in page.text_content("#live-status")
    assert page.get_attribute("#live-status", "data-stale") == "false"

    # the agent stops answering: the next loads fail and the view says it is stale
    page.goto(f"{young.url}/?live=5m&refresh=1")
    wait_timeline(page)
    page.route("**/api/ui/timeline*", lambda route: route.abort())
    page.wait_for_function("() => document.getElementById('live-status').dataset.stale === 'true'", timeout=10_000)
    assert "did not answer" in page.text_content("#live-status")
    assert page.evaluate("() => document.body.dataset.stale") == "true"
    page.unroute("**/api/ui/timeline*")
    page.wait_for_function("() => document.getElementById('live-status').dataset.stale === 'false'", timeout=10_000)

    # data that stopped arriving: the newest stored second is old, and the timeline says so
    extent = young.get_json("/api/range")
    if time.time() - extent["to"] < 31:
        page.wait_for_timeout((31 - (time.time() - extent["to"])) * 1000)
    page.goto(f"{young.url}/?live=5m&refresh=1")
    page.wait_for_selector("#timeline-notes .stale-data", timeout=10_000)
    assert "stored database" in page.text_content("#timeline-notes .stale-data")
    # refresh off: the pill says as of when
    page.select_option("#refresh", "0")
    assert query_of(page)["refresh"] == ["0"] and live_state(page) == "off"
    assert "as of" in page.text_content("#live-status")
    page.problems.assert_clean(allow=("ERR_FAILED",))


# -- health with a live agent ---------------------------------------------------------------------

def health_of(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/health", timeout=10) as resp:
        return json.loads(resp.read())


def test_health_tab_names_each_problem_with_its_fix(page, agent_process, spawn, tmp_path, require_in_ci):
    """A live agent whose py-spy lacks CAP_SYS_PTRACE (the refusal a hardened unit without the
    capability gets) and whose engine endpoint is down: the page says both, with the fix,
    lists the process with its role, and the empty flame graph says why it is empty."""
    require_in_ci(os.geteuid() == 0 and shutil.which("setpriv") is not None,
                  "needs root and setpriv to run py-spy without CAP_SYS_PTRACE")
    from infersight.daemon.stacks.pyspy import find_pyspy

    wrapper = tmp_path / "py-spy-without-ptrace"
    wrapper.write_text(f'#!/bin/sh\nexec setpriv --inh-caps=-all --bounding-set=-sys_ptrace {find_pyspy()} "$@"\n')
    wrapper.chmod(0o755)
    target = spawn([str(PROGRAMS / "idle.py"), "120", "oncall-health-target"])
    config = tmp_path / "agent.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "agent.duckdb"}"\n'
                      '[web]\nlisten = "127.0.0.1:0"\n'
                      '[targets]\ncmdline_patterns = ["oncall-health-target"]\nuse_nvml_processes = false\n'
                      f'[collectors.stacks]\npyspy_path = "{wrapper}"\n'
                      '[collectors.gpu]\nenabled = false\n'
                      '[collectors.engines]\nendpoints = ["http://127.0.0.1:9/metrics"]\nautodiscover = false\n')
    agent = agent_process(["--config", str(config)])
    url = agent.wait_started()
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        h = health_of(url)
        if any(t.get("last_error_kind") == "permission" for t in h.get("targets", [])):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"py-spy never failed on pid {target.pid}: {h}")
    page.goto(url + "/?live=5m")
    wait_timeline(page)
    page.wait_for_function("() => document.getElementById('health-pill').dataset.state === 'problems'")
    assert "problem" in page.text_content("#health-pill")
    page.click("#health-pill")
    wait_view(page, "health")
    assert query_of(page)["tab"] == ["health"]
    problems = page.eval_on_selector_all("#health-problems .problem", "(els) => els.map((e) => e.textContent)")
    attach = next(p for p in problems if f"py-spy cannot attach to pid {target.pid}" in p)
    assert "permission denied" in attach and "CAP_SYS_PTRACE" in attach and "Fix:" in attach
    down = next(p for p in problems if "http://127.0.0.1:9/metrics" in p)
    assert "is down" in down and "Fix:" in down
    row = page.locator(f"#health-body .proc-row[data-pid='{target.pid}']")
    assert row.get_attribute("data-role") == "engine" and "py-spy fails: permission" in row.text_content()
    collectors = page.eval_on_selector_all(".collectors tbody tr", "(els) => els.map((e) => e.dataset.name)")
    assert {"stacks", "engines", "host"} <= set(collectors)
    assert page.locator(".endpoints tbody tr").count() == 1
    save_tour(page, "health.png", ".analysis-panel")

    # the flame graph is empty, and says why
    page.click("#tab-flame")
    page.wait_for_function("() => document.getElementById('flame-view').dataset.state === 'empty'", timeout=20_000)
    why = page.text_content("#flame-sampling-problem")
    assert f"pid {target.pid}" in why and "CAP_SYS_PTRACE" in why
    page.problems.assert_clean()


# -- the tour's first screens ---------------------------------------------------------------------

def test_tour_overview_and_a_finding(page, scenario, labels):
    """The README's first screenshots: the page as it opens, a finding opened in the list and
    the flame graph of its culprit's thread."""
    page.set_viewport_size({"width": 1280, "height": 800})
    open_recording(page, scenario, labels)
    wait_view(page, "flame")
    save_tour(page, "overview.png")
    events = events_of(scenario, labels)
    gap = next(e for e in events if e["top_frames"] and e["top_frames"][0]["frame"] == "tokenize_slow_python")
    finding_row(page, gap["id"]).click()
    page.wait_for_function("() => document.getElementById('flame-view').dataset.state === 'ready' "
                           f"&& document.getElementById('flame-view').dataset.tid === '{gap['evidence']['culprit']['tid']}'")
    save_tour(page, "findings.png", ".findings-panel")
    save_tour(page, "finding.png", ".analysis-panel")
    assert hottest_functions(page)[0] == "tokenize_slow_python"
    assert matched_share(scenario.get_json(f"/api/flamegraph?from={gap['start']}&to={gap['end']}"), "tokenize") > 0.5
    page.problems.assert_clean()
