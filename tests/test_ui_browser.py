"""The web UI in a real browser: Debian's chromium driven through Playwright.

A store is filled from the H100 recording with ``infersight replay`` and served with
``infersight serve``; the tests drive the page like a person on call: read the timeline's
classes, drag across the host-bound minutes, search, diff against the healthy phase, open a
finding, follow a deep link. A second, synthetic store holds a 20,000-frame profile and
frames named like markup (rendered as text, running nothing) and no GPU or engine data.
Screenshots land in test-artifacts/.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest_ui import (  # noqa: F401 (browser, labels, page, scenario, synthetic, young: fixtures)
    DEEP_FRAMES,
    HOSTILE_FILE,
    HOSTILE_FRAME,
    HOSTILE_UNICODE,
    browser,
    drag_select,
    event_bar_y,
    finding_row,
    hottest_functions,
    labels,
    matched_share,
    open_recording,
    page,
    phase,
    query_of,
    save_screenshot,
    scenario,
    selection,
    synthetic,
    time_to_x,
    timeline_geometry,
    tooltip_text,
    track_y,
    view_of,
    wait_timeline,
    wait_view,
    young,
    young_mfu,
)

pytestmark = pytest.mark.browser

# Ground truth of the recording (its README): the class each phase must show.
PHASE_CLASS = {"healthy": "memory_bound", "host_bound": "host_bound", "core_bound": "host_bound",
               "memory_bound": "memory_bound", "idle": "idle", "launch_bound": "launch_bound",
               "compute_bound": "compute_bound", "stall": "stall"}


def test_timeline_shows_the_class_of_every_phase(page, scenario, labels):
    open_recording(page, scenario, labels)
    geo = timeline_geometry(page)
    y = track_y(geo, "classes", 0)
    for row in labels:
        expected = PHASE_CLASS.get(row["phase"])
        mid = (row["t0"] + row["t1"]) / 2
        page.mouse.move(time_to_x(geo, mid), y)
        text = tooltip_text(page)
        windows = scenario.get_json(f"/api/windows?from={int(mid)}&to={int(mid) + 1}&gpu=0")["windows"]
        assert windows, f"no analysis window at {mid} ({row['phase']})"
        stored = windows[0]["class"]
        assert stored.replace("_", " ") in text, f"{row['phase']}: tooltip {text!r} lacks the stored class {stored}"
        if expected is not None:
            assert expected.replace("_", " ") in text, f"{row['phase']} should read {expected}: {text!r}"
    legend = page.eval_on_selector_all("#legend .legend-item", "(els) => els.map((e) => e.dataset.class)")
    assert set(PHASE_CLASS.values()) <= set(legend), legend
    assert page.locator(".gpu-card").count() == 1
    assert page.locator("#timeline-notes .note").count() == 0, "the recording has GPU and engine data: no notes expected"
    save_screenshot(page, "ui-timeline.png")
    page.problems.assert_clean()


def test_selecting_the_host_bound_phase_shows_the_culprit(page, scenario, labels):
    open_recording(page, scenario, labels)
    wait_view(page, "flame")
    t0, t1 = phase(labels, "host_bound")
    drag_select(page, t0, t1)
    page.wait_for_function(f"() => Math.abs(+document.getElementById('flame-view').dataset.from - {t0}) < 0.5 "
                           "&& document.getElementById('flame-view').dataset.state === 'ready'")
    assert selection(page) == pytest.approx([t0, t1], abs=0.5)
    assert hottest_functions(page)[0] == "tokenize_slow_python"
    assert "host bound" in page.text_content("#selection-text")

    # the tooltip of the canvas names the frame; walk down the widest (leftmost) column
    canvas = page.locator("#flame-canvas").bounding_box()
    found = None
    for row in range(12):
        page.mouse.move(canvas["x"] + canvas["width"] * 0.3, canvas["y"] + row * 18 + 9)
        text = tooltip_text(page)
        if text.startswith("tokenize_slow_python"):
            found = (row, text)
            break
    assert found, "no frame tokenize_slow_python under the widest column"
    assert "engine.py:" in found[1] and "of total" in found[1] and "of parent" in found[1]
    page.mouse.click(canvas["x"] + canvas["width"] * 0.3, canvas["y"] + found[0] * 18 + 9)
    assert page.text_content("#flame-crumbs .crumb.current") == "tokenize_slow_python"
    assert json.loads(query_of(page)["focus"][0])[-1] == "tokenize_slow_python"
    page.click("#flame-reset")
    assert "focus" not in query_of(page)

    page.fill("#flame-search", "tokenize")
    page.wait_for_function("() => document.getElementById('flame-search-result').textContent.includes('%')")
    shown = float(page.get_attribute("#flame-search-result", "data-share"))
    tree = scenario.get_json(f"/api/flamegraph?from={t0}&to={t1}")
    assert shown == pytest.approx(matched_share(tree, "tokenize"), abs=1e-9)
    assert shown > 0.5, "the slow tokenizer is most of the host-bound phase's samples"
    assert query_of(page)["q"] == ["tokenize"]
    save_screenshot(page, "ui-flame-host-bound.png")
    page.problems.assert_clean()


def test_diff_of_the_healthy_and_host_bound_phases(page, scenario, labels):
    open_recording(page, scenario, labels)
    drag_select(page, *phase(labels, "healthy"))
    page.click("#sel-base")
    drag_select(page, *phase(labels, "host_bound"))
    page.click("#tab-diff")
    wait_view(page, "diff")
    assert page.get_attribute("#diff-view", "data-state") == "ready"
    rows = page.eval_on_selector_all("#diff-table .change-row", """(els) => els.map((e) => ({
        name: e.querySelector('.fn-name').textContent, delta: +e.dataset.delta}))""")
    assert rows[0]["name"] == "tokenize_slow_python" and rows[0]["delta"] > 0.5
    sync = [r for r in rows if r["name"] == "synchronize"]
    assert sync and sync[0]["delta"] < -0.3, "waiting on the GPU shrank: the GPU had nothing to do"
    q = query_of(page)
    assert q["tab"] == ["diff"] and "base" in q and "sel" in q
    assert page.locator("#diff-legend .ramp-step").count() == 7
    save_screenshot(page, "ui-diff.png")
    page.problems.assert_clean()


def test_clicking_a_finding_selects_its_range_and_shows_its_code(page, scenario, labels):
    open_recording(page, scenario, labels)
    t0, t1 = phase(labels, "host_bound")
    events = scenario.get_json(f"/api/events?from={labels[0]['t0'] - 5}&to={labels[-1]['t1'] + 5}")["events"]
    overlap = [(min(e["end"], t1) - max(e["start"], t0), e) for e in events]
    ev = max(overlap, key=lambda x: x[0])[1]
    assert ev["kind"] == "cpu_gpu_gap"
    finding_row(page, ev["id"]).click()
    page.wait_for_function(f"() => Math.abs(+document.getElementById('flame-view').dataset.from - {ev['start']}) < 0.01 "
                           "&& document.getElementById('flame-view').dataset.state === 'ready'")
    q = query_of(page)
    assert q["event"] == [ev["id"]]
    assert selection(page) == pytest.approx([ev["start"], ev["end"]], abs=1e-3)
    assert hottest_functions(page)[0] == ev["top_frames"][0]["frame"]
    assert page.locator(".finding.active").count() == 1
    # filtered to the culprit's process and thread, over the finding's span
    culprit = ev["evidence"]["culprit"]
    assert q["pid"] == [str(culprit["pid"])] and q["tid"] == [str(culprit["tid"])]
    assert page.input_value("#f-pid") == str(culprit["pid"]) and page.input_value("#f-tid") == str(culprit["tid"])
    assert page.get_attribute("#flame-view", "data-tid") == str(culprit["tid"])
    assert "the finding's culprit" in page.text_content("#flame-filter-who")
    tree = scenario.get_json(f"/api/flamegraph?from={ev['start']}&to={ev['end']}&pid={culprit['pid']}"
                             f"&tid={culprit['tid']}&waits=hide")
    assert tree["total"] > 0 and float(page.get_attribute("#flame-view", "data-total")) == pytest.approx(tree["total"])

    # one click from the finding to "this period versus the baseline"
    page.locator(".finding.active").get_by_role("button", name="Compare with baseline").click()
    wait_view(page, "diff")
    base = [float(x) for x in query_of(page)["base"][0].split("-")]
    assert base[1] <= ev["start"] + 1e-6, "the baseline is a period before the finding"
    assert page.locator("#diff-table .change-row").count() > 0
    save_screenshot(page, "ui-finding-compare.png")

    # a finding's bar on the timeline opens it too
    other = next(e for e in events if e["id"] != ev["id"])
    geo = timeline_geometry(page)
    page.mouse.click(time_to_x(geo, (other["start"] + other["end"]) / 2), event_bar_y(page, geo, other))
    page.wait_for_function(f"() => new URLSearchParams(location.search).get('event') === {json.dumps(other['id'])}")
    page.problems.assert_clean()


def test_deep_links_restore_what_was_seen(page, scenario, labels):
    h0, h1 = phase(labels, "host_bound")
    b0, b1 = phase(labels, "healthy")
    open_recording(page, scenario, labels, f"&sel={h0:.3f}-{h1:.3f}&base={b0:.3f}-{b1:.3f}&tab=diff&q=tokenize&orient=flame")
    wait_view(page, "diff")
    assert page.get_attribute("#tab-diff", "aria-selected") == "true"
    assert page.text_content("#diff-table .change-row .fn-name") == "tokenize_slow_python"
    page.click("#tab-flame")
    wait_view(page, "flame")
    assert page.input_value("#flame-search") == "tokenize"
    assert "%" in page.text_content("#flame-search-result")
    assert page.text_content("#f-orient").startswith("Flame")
    assert "Selected" in page.text_content("#selection-text")

    # a webhook's link names only the finding: the page finds its range itself
    events = scenario.get_json(f"/api/events?from={labels[0]['t0'] - 5}&to={labels[-1]['t1'] + 5}")["events"]
    ev = events[-1]
    page.goto(f"{scenario.url}/?event={quote(ev['id'], safe='')}")
    wait_timeline(page)
    page.wait_for_function(f"() => Math.abs(+document.getElementById('flame-view').dataset.from - {ev['start']}) < 0.01")
    assert selection(page) == pytest.approx([ev["start"], ev["end"]], abs=1e-3)
    assert page.locator(".finding.active").count() == 1
    save_screenshot(page, "ui-deep-link.png")
    page.problems.assert_clean()


def test_zoom_pan_presets_and_class_band_clicks(page, scenario, labels):
    open_recording(page, scenario, labels)
    f0, t0 = view_of(page)
    page.click("#zoom-in")
    f1, t1 = view_of(page)
    assert t1 - f1 == pytest.approx((t0 - f0) / 2, rel=1e-3)
    assert (f1 + t1) / 2 == pytest.approx((f0 + t0) / 2, abs=0.01)
    wait_timeline(page)
    assert float(page.get_attribute("#timeline", "data-view-from")) == pytest.approx(f1, abs=1e-3)

    # shift+drag pans: dragging right by a quarter of the plot shows earlier data
    geo = timeline_geometry(page)
    y = track_y(geo, "activity", 0)
    x0 = geo["x"] + (geo["left"] + geo["right"]) / 2
    quarter = (geo["right"] - geo["left"]) / 4
    page.keyboard.down("Shift")
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x0 + quarter / 2, y)
    page.mouse.move(x0 + quarter, y)
    page.mouse.up()
    page.keyboard.up("Shift")
    f2, t2 = view_of(page)
    assert f2 == pytest.approx(f1 - (t1 - f1) / 4, abs=0.05) and t2 - f2 == pytest.approx(t1 - f1, abs=0.01)
    assert "sel" not in query_of(page), "a pan selects nothing"

    # ctrl+wheel zooms out around the pointer
    wait_timeline(page)
    page.mouse.move(x0, y)
    page.keyboard.down("Control")
    page.mouse.wheel(0, 100)
    page.keyboard.up("Control")
    page.wait_for_function(f"() => +new URLSearchParams(location.search).get('to') - "
                           f"+new URLSearchParams(location.search).get('from') > {t2 - f2 + 1}")

    # a click on the class band selects that stretch of one class
    open_recording(page, scenario, labels)
    geo = timeline_geometry(page)
    h0, h1 = phase(labels, "host_bound")
    page.mouse.click(time_to_x(geo, (h0 + h1) / 2), track_y(geo, "classes", 0))
    sel = selection(page)
    runs = scenario.get_json(f"/api/windows?from={sel[0]}&to={sel[1]}&gpu=0")["windows"]
    assert {w["class"] for w in runs} == {"host_bound"} and sel[0] <= (h0 + h1) / 2 <= sel[1]

    page.click("#presets [data-preset='5m']")
    assert query_of(page)["live"] == ["5m"] and "from" not in query_of(page)
    assert page.get_attribute("#presets [data-preset='5m']", "aria-pressed") == "true"
    page.click("#presets [data-preset='all']")
    wait_timeline(page)
    extent = scenario.get_json("/api/range")
    f, t = view_of(page)
    assert f <= extent["from"] and t >= extent["to"]
    page.click("#presets [data-preset='custom']")
    page.fill("#custom-from", "2020-01-02T03:04:05")
    page.fill("#custom-to", "2020-01-02T04:04:05")
    page.click("#custom-form button[type=submit]")
    f, t = view_of(page)
    assert t - f == 3600
    wait_timeline(page)
    assert "No data in this range" in page.text_content("#timeline-notes")
    page.problems.assert_clean()


def test_exports_of_the_selected_range(page, scenario, labels):
    t0, t1 = phase(labels, "host_bound")
    open_recording(page, scenario, labels, f"&sel={t0:.3f}-{t1:.3f}")
    wait_view(page, "flame")
    files = {}
    for button in ("export-folded", "export-speedscope", "export-png"):
        with page.expect_download() as download:
            page.click(f"#{button}")
        files[button] = (download.value.suggested_filename, Path(download.value.path()).read_bytes())
    name, folded = files["export-folded"]
    assert name.endswith(".folded.txt")
    lines = folded.decode().splitlines()
    assert lines and all(line.rsplit(" ", 1)[1].replace(".", "").isdigit() for line in lines)
    assert lines[0].split(";")[-1].startswith("tokenize_slow_python"), "the heaviest stack comes first"
    name, speedscope = files["export-speedscope"]
    doc = json.loads(speedscope)
    assert name.endswith(".speedscope.json") and doc["profiles"][0]["type"] == "sampled"
    assert "tokenize_slow_python" in {f["name"] for f in doc["shared"]["frames"]}
    name, png = files["export-png"]
    assert name.endswith(".png") and png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert width == page.eval_on_selector("#flame-canvas", "(c) => c.width")
    page.problems.assert_clean()


def test_frame_names_are_rendered_as_text_and_run_nothing(page, synthetic):
    page.goto(f"{synthetic.url}/?q={quote(HOSTILE_FRAME)}")
    wait_timeline(page)
    wait_view(page, "flame")
    assert HOSTILE_FRAME in page.text_content("#findings-list")
    assert HOSTILE_FRAME in hottest_functions(page) or HOSTILE_UNICODE in hottest_functions(page)
    assert page.input_value("#flame-search") == HOSTILE_FRAME
    assert page.text_content("#flame-search-result").startswith("1 frame")
    # the tooltip of the frame shows its name and file as they are
    canvas = page.locator("#flame-canvas").bounding_box()
    texts = []
    for row in range(4):
        page.mouse.move(canvas["x"] + 20, canvas["y"] + row * 18 + 9)
        texts.append(tooltip_text(page))
    assert any(t.startswith(HOSTILE_FRAME) and HOSTILE_FILE in t for t in texts), texts
    assert any(t.startswith(HOSTILE_UNICODE) for t in texts), texts
    page.mouse.move(canvas["x"] + 20, canvas["y"] + 2 * 18 + 9)
    save_screenshot(page, "ui-hostile-names.png")
    page.mouse.click(canvas["x"] + 20, canvas["y"] + 3 * 18 + 9)
    assert HOSTILE_UNICODE in page.text_content("#flame-crumbs")
    options = page.eval_on_selector_all("#f-tid option", "(els) => els.map((e) => e.textContent)")
    assert any("<svg onload=alert(3)>" in o for o in options)
    page.locator(".finding").first.click()
    wait_view(page, "flame")
    # the evidence of the opened finding, its unknown keys in words, as text
    assert "<script>alert(5)</script>" in page.text_content("#findings-list .evidence")
    assert "<b>key</b>" in page.text_content("#findings-list .evidence")
    page.wait_for_timeout(300)
    injected = page.evaluate("""() => ({imgs: document.querySelectorAll('img, svg, iframe').length,
        handlers: document.querySelectorAll('[onerror], [onload]').length,
        scripts: [...document.scripts].map((s) => s.src)})""")
    assert injected["imgs"] == 0 and injected["handlers"] == 0, injected
    assert all(src.endswith("/static/main.js") for src in injected["scripts"]), injected
    page.problems.assert_clean()


def test_missing_data_is_said_plainly(page, synthetic):
    page.goto(synthetic.url + "/")
    wait_timeline(page)
    notes = page.text_content("#timeline-notes")
    assert "No GPU data on this host" in notes
    assert "No inference engine metrics" in notes
    assert "roof" not in {t["kind"] for t in timeline_geometry(page)["layout"]}, "no MFU/MBU stored: no track"
    start = synthetic.facts["start"]
    page.goto(f"{synthetic.url}/?from={start - 600}&to={start + 600}&sel={start - 500}-{start - 400}")
    wait_view(page, "flame")
    assert page.get_attribute("#flame-view", "data-state") == "empty"
    assert "No samples in this range" in page.text_content("#flame-empty")
    page.goto(f"{synthetic.url}/?from={start - 9000}&to={start - 8000}")
    wait_timeline(page)
    assert "No data in this range" in page.text_content("#timeline-notes")
    save_screenshot(page, "ui-empty-states.png")
    page.problems.assert_clean()


def test_flame_graph_of_20000_frames_render_time(page, synthetic):
    """Reports (prints) how long the browser takes; the figure is not asserted (shared, noisy machine)."""
    page.goto(synthetic.url + "/")
    wait_view(page, "flame")
    nodes = int(page.get_attribute("#flame-canvas", "data-nodes"))
    assert nodes >= 20_000
    layout_ms = float(page.get_attribute("#flame-canvas", "data-layout-ms"))
    redraws = []
    for _ in range(7):
        redraws.append(page.evaluate("""() => { const t = performance.now();
            document.getElementById('f-orient').click(); return performance.now() - t; }"""))
    draw_ms = [float(page.get_attribute("#flame-canvas", "data-render-ms"))]
    first = page.evaluate("""async ([from, to]) => {
        const { FlameGraph } = await import('/static/flame.js');
        const { Tooltip } = await import('/static/tooltip.js');
        const tree = await (await fetch(`/api/flamegraph?from=${from}&to=${to}`)).json();
        const wrap = document.createElement('div');
        wrap.className = 'canvas-wrap';
        const canvas = document.createElement('canvas');
        wrap.append(canvas);
        document.body.append(wrap);
        const t0 = performance.now();
        const g = new FlameGraph(canvas, new Tooltip(document.getElementById('tooltip')));
        const layout = g.setTree(tree);
        const draw = g.render();
        const total = performance.now() - t0;
        wrap.remove();
        return { layout, draw, total, nodes: g.n };
    }""", [synthetic.facts["start"], synthetic.facts["end"]])
    assert first["nodes"] == nodes
    print(f"\nflame graph of {nodes} frames in chromium: first render {first['total']:.1f} ms "
          f"(flatten {first['layout']:.1f} ms + draw {first['draw']:.1f} ms); "
          f"in the page: flatten {layout_ms:.1f} ms, last draw {draw_ms[0]:.1f} ms; "
          f"redraw on a click, median of {len(redraws)}: {statistics.median(redraws):.1f} ms")
    save_screenshot(page, "ui-flame-20k.png")
    page.problems.assert_clean()


def canvas_colors(page, selector: str, x: float, y0: float, y1: float) -> list[str]:
    """The colours (#RRGGBB) of the canvas's pixels in column ``x``, rows y0..y1 (CSS px)."""
    return page.eval_on_selector(selector, """(c, [x, y0, y1]) => {
        const k = c.width / c.clientWidth;
        const data = c.getContext('2d').getImageData(Math.round(x * k), Math.round(y0 * k), 1,
                                                      Math.max(1, Math.round((y1 - y0) * k))).data;
        const out = [];
        for (let i = 0; i < data.length; i += 4) {
            out.push('#' + [data[i], data[i + 1], data[i + 2]].map((v) => v.toString(16).padStart(2, '0')).join('').toUpperCase());
        }
        return out;
    }""", [x, y0, y1])


def near(color: str, want: str, tolerance: int = 6) -> bool:
    """Two #RRGGBB colours within ``tolerance`` per channel (lines are anti-aliased)."""
    return all(abs(int(color[i:i + 2], 16) - int(want[i:i + 2], 16)) <= tolerance for i in (1, 3, 5))


def test_a_live_view_fits_the_first_minutes_of_data(page, young):
    """Two minutes of data under the 1 h preset fill the timeline instead of its right edge."""
    page.goto(f"{young.url}/?live=1h")
    wait_timeline(page)
    geo = timeline_geometry(page)
    extent = young.get_json("/api/range")
    width = geo["right"] - geo["left"]
    start_at = (time_to_x(geo, extent["from"]) - geo["x"] - geo["left"]) / width
    assert 0 <= start_at < 0.1, f"the data starts at {start_at:.0%} of the timeline"
    assert geo["to"] - geo["from"] < 600, "the view is the data's minutes, not the hour"
    assert query_of(page)["live"] == ["1h"]
    assert page.get_attribute("#presets [data-preset='1h']", "aria-pressed") == "true"
    # the 5 min preset is longer than the data too: the same fit
    page.click("#presets [data-preset='5m']")
    wait_timeline(page)
    geo = timeline_geometry(page)
    assert (time_to_x(geo, extent["from"]) - geo["x"] - geo["left"]) / width < 0.1
    save_screenshot(page, "ui-young-fit.png")
    page.problems.assert_clean()


def test_a_300_frame_stack_is_drawn(page, young):
    start, end = young.facts["start"], young.facts["end"]
    page.goto(f"{young.url}/?from={start - 5}&to={end + 5}")
    wait_view(page, "flame")
    assert page.get_attribute("#flame-view", "data-state") == "ready"
    assert int(page.get_attribute("#flame-canvas", "data-nodes")) == DEEP_FRAMES + 3
    box = page.locator("#flame-canvas").bounding_box()
    assert box["height"] >= (DEEP_FRAMES + 1) * 18
    # the deepest row (the root is row 0): drawn, and its tooltip names the leaf
    y = DEEP_FRAMES * 18 + 9
    colors = canvas_colors(page, "#flame-canvas", 40, y - 4, y + 4)
    assert any(c not in ("#000000", "#FFFFFF") for c in colors), colors
    canvas = page.locator("#flame-canvas")
    canvas.hover(position={"x": 40, "y": y})  # scrolls the deep row into view
    assert tooltip_text(page).startswith(young.facts["deep_leaf"])
    assert "deep_import_leaf" in hottest_functions(page)
    canvas.click(position={"x": 40, "y": y})
    assert json.loads(query_of(page)["focus"][0])[-1] == "deep_import_leaf"
    assert len(json.loads(query_of(page)["focus"][0])) == DEEP_FRAMES
    save_screenshot(page, "ui-flame-deep.png")
    page.problems.assert_clean()


def test_engine_mfu_and_mbu_are_drawn_under_the_gpu_activity(page, young):
    start, end = young.facts["start"], young.facts["end"]
    page.goto(f"{young.url}/?from={start - 5}&to={end + 5}")
    wait_timeline(page)
    geo = timeline_geometry(page)
    kinds = [(t["kind"], t.get("gpu")) for t in geo["layout"]]
    assert kinds.index(("roof", 0)) == kinds.index(("activity", 0)) + 1
    roof = next(t for t in geo["layout"] if t["kind"] == "roof")
    t_mid = start + 100.5
    page.mouse.move(time_to_x(geo, t_mid), geo["y"] + roof["y"] + roof["h"] / 2)
    text = tooltip_text(page)
    assert f"MFU (engine){young_mfu(100) * 100:.1f}%" in text.replace(" ", "").replace("MFU(engine)", "MFU (engine)"), text
    assert "MBU (engine)60.0%" in text.replace("MBU (engine) ", "MBU (engine)"), text
    # the MFU line lies where its value says, on a scale of 0 to 100% (the track's top label)
    x = time_to_x(geo, t_mid) - geo["x"]
    y_mfu = roof["y"] + roof["h"] * (1 - young_mfu(100))
    colors = canvas_colors(page, "#timeline canvas.base", x, y_mfu - 2, y_mfu + 2)
    assert any(near(c, "#009E73") for c in colors), colors
    y_mbu = roof["y"] + roof["h"] * (1 - 0.6)
    colors = canvas_colors(page, "#timeline canvas.base", x, y_mbu - 2, y_mbu + 2)
    assert any(near(c, "#E69F00") for c in colors), colors
    page.problems.assert_clean()
