"""`resadapt-eval view`: the static report of a sweep, built from real runs of the bundled backbone
on generated probes, checked as files and in a real headless Chromium (skipped, with the
reason, where no browser is installed; `.ci/run` installs one)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from click.testing import CliRunner

from resadapt_eval.analysis import frontier
from resadapt_eval.analysis.view import build_site
from resadapt_eval.pipeline.store import read_records

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TASKS = ["probe-videoqa", "probe-grounding", "probe-math"]


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    """A real sweep: three probes (two videos, one image) x vanilla, uniform-scale x two budgets, three
    samples each, on probe data generated into a private $RESADAPT_HOME (six samples per probe)."""
    from resadapt_eval.pipeline.runner import RunConfig, sweep

    base = tmp_path_factory.mktemp("view")
    old = os.environ.get("RESADAPT_HOME")
    os.environ["RESADAPT_HOME"] = str(base / "home")
    try:
        sweep(RunConfig(task="", out=str(base / "results"), limit=3, progress=False,
                        task_options={"probe": {"seed": 0, "n": 6}}),
              TASKS, ["vanilla", "uniform-scale"], ["0.25", "1.0"])
    finally:
        if old is None:
            os.environ.pop("RESADAPT_HOME", None)
        else:
            os.environ["RESADAPT_HOME"] = old
    return base / "results"


@pytest.fixture(scope="module")
def site(sweep_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "view"
    return build_site(sweep_root, out, workers=2)


def _blob(page: Path) -> dict:
    text = page.read_text()
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S).group(1))


def _records(root: Path) -> dict[str, list[dict]]:
    return {str(p.parent.relative_to(root)): read_records(p) for p in sorted(root.glob("*/*/*/*/samples.jsonl"))}


# -- files -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_records_say_where_the_plan_sits(sweep_root):
    """New records carry each planned frame's source number and time, and each chunk's tokens."""
    for name, records in _records(sweep_root).items():
        for r in records:
            plan = r["plan"]
            assert len(r["frame_indices"]) == len(r["frame_times"]) == len(plan["frames"]), name
            assert len(r["chunk_tokens"]) == len(plan["chunks"])
            assert r["frame_times"] == sorted(r["frame_times"])
            if plan["reduction"] is None:
                assert sum(r["chunk_tokens"]) == r["tokens"], name
            # one geometry factor f for every chunk: tokens = (h / f) (w / f)
            ratios = {h * w / t for (h, w), t in zip(plan["chunks"], r["chunk_tokens"])}
            assert len(ratios) == 1 and int(next(iter(ratios)) ** 0.5) ** 2 == next(iter(ratios))


@pytest.mark.slow
def test_site_has_every_page_and_frontier_numbers(site, sweep_root):
    runs = frontier.annotate(frontier.load_runs(sweep_root))
    strategies = frontier.strategy_table(runs)
    records = _records(sweep_root)
    assert site.runs == len(runs) == 12
    assert site.samples == 9 and site.sprites == 9 and not site.notes
    assert site.pages == 1 + 12 + 3 + 9
    index = (site.out / "index.html").read_text()
    for task in TASKS:
        assert (site.out / "figures" / f"{task}__tiny-bundled.svg").stat().st_size > 1000
        assert f'href="samples/{task}__tiny-bundled.html"' in index
    for row in strategies.itertuples():  # the strategy table is frontier.py's, formatted as it formats
        assert f">{frontier.STRATEGY_FORMATS['auc_logcost'](row.auc_logcost)}<" in index
    for name, recs in records.items():
        task, backbone, strategy, run = name.split("/")
        blob = _blob(site.out / "runs" / f"{task}__{backbone}__{strategy}__{run}.html")
        assert [row[0] for row in blob["rows"]] == [r["id"] for r in recs]
        assert [row[2] for row in blob["rows"]] == [r["tokens"] for r in recs]
    sample = _blob(site.out / "samples" / "probe-grounding__tiny-bundled" / "0000-pgnd-0-00000.html")
    assert len(sample["runs"]) == 4 and sample["note"] == ""
    assert sample["evidence"]["seconds"] and all(r["sprite"] for r in sample["runs"])
    assert (site.out / "samples" / "probe-grounding__tiny-bundled" / "img" / "0000-pgnd-0-00000-f32.jpg").is_file()


@pytest.mark.slow
def test_without_the_data_the_page_says_so_and_shows_the_plan(sweep_root, tmp_path):
    site = build_site(sweep_root, tmp_path / "view", tasks=["probe-videoqa"],
                      data_roots={"probe-videoqa": str(tmp_path / "nowhere")})
    assert site.sprites == 0 and "nowhere" in site.notes["probe-videoqa"]
    page = next((tmp_path / "view" / "samples" / "probe-videoqa__tiny-bundled").glob("*.html"))
    data = _blob(page)
    assert "--data-root probe-videoqa=DIR" in data["note"]
    assert all(r["chunks"] and r["chunk_tokens"] and r["sprite"] is None for r in data["runs"])


def test_committed_records_without_frame_times_still_render(tmp_path):
    """Runs written before frame times and chunk tokens existed (tests/data/schema1): chunk tokens come
    from the plan's sizes (f^2 = sum(h w) / tokens without a reduction) and time counts decoded frames."""
    root = tmp_path / "results"
    shutil.copytree(REPO / "tests" / "data" / "schema1" / "probe-videoqa", root / "probe-videoqa")
    site = build_site(root, tmp_path / "view", thumbnails=False)
    assert site.runs == 2 and site.samples == 200 and site.sprites == 0
    data = _blob(tmp_path / "view" / "samples" / "probe-videoqa__reference" / "pvqa-0-00000.html")
    for run in data["runs"]:
        assert run["times"] is None and sum(run["chunk_tokens"]) == run["tokens"]
    assert "--no-thumbnails" in data["note"]


def test_cli_view_and_its_errors(tmp_path):
    from resadapt_eval.cli import main

    root = tmp_path / "results"
    shutil.copytree(REPO / "results" / "baseline" / "probe-math", root / "probe-math")
    res = CliRunner().invoke(main, ["view", str(root), "--out", str(tmp_path / "site"), "--no-thumbnails"])
    assert res.exit_code == 0, res.output
    assert f"report: {tmp_path / 'site' / 'index.html'}" in res.output
    bad = CliRunner().invoke(main, ["view", str(root), "--data-root", "probe-math"])
    assert bad.exit_code == 2 and "TASK=DIR" in bad.output
    empty = CliRunner().invoke(main, ["view", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "no finished runs" in empty.output


# -- in a browser ------------------------------------------------------------------------------

def _browser_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return f"no Chromium at {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="view-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    for _ in range(100):
        if driver.execute_script("return document.body && document.body.getAttribute('data-ready')") == "1":
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never finished rendering")


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.slow
def test_every_page_loads_without_console_errors_and_every_link_resolves(browser, site):
    pages = sorted(site.out.rglob("*.html"))
    assert len(pages) == site.pages
    checked = 0
    for page in pages:
        _open(browser, page)
        assert _errors(browser) == [], page
        targets = browser.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
            ".concat(Array.from(document.querySelectorAll('img[src]')).map(i => i.src))")
        for url in targets:
            parts = urlparse(url)
            assert parts.scheme == "file", f"{page}: {url} leaves the site"
            target = Path(unquote(parts.path))
            assert target.is_file(), f"{page}: broken link {url}"
            if parts.fragment:
                assert f'id="{parts.fragment}"' in target.read_text(), f"{page}: no anchor {url}"
            checked += 1
    assert checked > 100


@pytest.mark.slow
def test_the_records_table_sorts_and_filters(browser, site):
    page = site.out / "runs" / "probe-videoqa__tiny-bundled__uniform-scale__b0.25-f8.html"
    _open(browser, page)
    rows = _blob(page)["rows"]

    def column(i: int) -> list[str]:
        return browser.execute_script(
            f"return Array.from(document.querySelectorAll('#records tbody tr')).map(r => r.cells[{i}].textContent)")

    heads = browser.find_elements("css selector", "#records th")
    heads[0].click()  # id, ascending
    assert column(0) == sorted(r[0] for r in rows)
    heads[0].click()  # descending
    assert column(0) == sorted((r[0] for r in rows), reverse=True)
    heads[4].click()  # time, ascending
    times = [float(t) for t in column(4)]
    assert times == sorted(times) and len(times) == len(rows)
    box = browser.find_element("id", "filter")
    box.send_keys(rows[1][0])
    assert column(0) == [rows[1][0]]
    assert _errors(browser) == []


@pytest.mark.slow
def test_the_sample_filter_shows_where_a_is_right_and_b_wrong(browser, site, sweep_root):
    from selenium.webdriver.support.ui import Select

    def keep(a, b) -> set[str]:
        return {i for i, m in marks.items() if (a == "" or m[a] == "1") and (b == "" or m[b] == "0")}

    # the first task and pair of runs (A, B; "" is any run) whose filter keeps some samples but not all
    for task in TASKS:
        page = site.out / "samples" / f"{task}__tiny-bundled.html"
        data = _blob(page)
        marks = {s["id"]: s["marks"] for s in data["samples"]}
        choices = [(a, b) for a in ["", *range(len(data["runs"]))] for b in ["", *range(len(data["runs"]))]
                   if a != b and 0 < len(keep(a, b)) < len(marks)]
        if choices:
            a, b = sorted(choices, key=lambda pair: "" in pair)[0]  # both runs named, where possible
            break
    else:
        raise AssertionError("every run agrees on every sample: the fixture cannot exercise the filter")
    _open(browser, page)
    Select(browser.find_element("id", "run-a")).select_by_value(str(a))
    Select(browser.find_element("id", "run-b")).select_by_value(str(b))
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#samples tbody tr')).map(r => r.cells[0].textContent)")
    # what the records themselves say: right = main metric >= 0.5, wrong = scored below it
    verdicts = []
    for i in (a, b):
        if i == "":
            verdicts.append(None)
            continue
        task, bb, strategy, tail = data["runs"][i]["key"].split("__")
        directory = sweep_root / task / bb / strategy / tail
        metric = json.loads((directory / "summary.json").read_text())["main_metric"]
        verdicts.append({r["id"]: r["score"][metric] >= 0.5 for r in read_records(directory / "samples.jsonl")})
    expected = {i for i in marks if (verdicts[0] is None or verdicts[0][i]) and (verdicts[1] is None or not verdicts[1][i])}
    assert set(shown) == expected == keep(a, b)
    assert browser.find_element("id", "ab-count").text.startswith(f"{len(expected)} samples")
    assert _errors(browser) == []


@pytest.mark.slow
def test_sample_page_screenshot_shows_the_thumbnails(browser, site, tmp_path):
    import numpy as np
    from PIL import Image

    page = site.out / "samples" / "probe-videoqa__tiny-bundled" / "pvqa-0-00000.html"
    _open(browser, page)
    for _ in range(100):
        if browser.execute_script("return document.body.getAttribute('data-thumbs')") == "drawn":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("thumbnails were never drawn")
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"), dtype=float)
    assert shot.std() > 20  # not a blank page
    canvas = browser.find_elements("css selector", ".chunk canvas")[0]
    thumb = np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("L"), dtype=float)
    assert thumb.std() > 5 and abs(thumb.mean() - 221) > 3  # a drawn frame, not the grey placeholder
    assert _errors(browser) == []


@pytest.mark.slow
def test_ten_thousand_records_page_sort_and_filter_fast(browser, sweep_root, tmp_path):
    """A run of 10,000 records (a real run's records repeated under new ids): the page opens, sorts
    and filters in well under a second each, since only 50 rows are drawn."""
    source = sweep_root / "probe-videoqa" / "tiny-bundled" / "uniform-scale" / "b0.25-f8"
    big = tmp_path / "results" / "probe-videoqa" / "tiny-bundled" / "uniform-scale" / "b0.25-f8"
    big.mkdir(parents=True)
    for name in ("summary.json", "manifest.json"):
        shutil.copy(source / name, big / name)
    records = read_records(source / "samples.jsonl")
    with open(big / "samples.jsonl", "w") as f:
        for i in range(10_000):
            f.write(json.dumps({**records[i % len(records)], "id": f"{i:05d}-{records[i % len(records)]['id']}"}) + "\n")
    built = build_site(tmp_path / "results", tmp_path / "view", thumbnails=False)
    page = built.out / "runs" / "probe-videoqa__tiny-bundled__uniform-scale__b0.25-f8.html"
    start = time.perf_counter()
    _open(browser, page)
    opened = time.perf_counter() - start
    assert browser.execute_script("return document.querySelectorAll('#records tbody tr').length") == 50
    start = time.perf_counter()
    browser.find_elements("css selector", "#records th")[2].click()
    browser.find_elements("css selector", "#records th")[2].click()
    browser.find_element("id", "filter").send_keys("09999")
    acted = time.perf_counter() - start
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('#records tbody tr')).map(r => r.cells[0].textContent)"
    ) == [f"09999-{records[9999 % len(records)]['id']}"]
    assert opened < 5 and acted < 5, (opened, acted)
    assert _errors(browser) == []
