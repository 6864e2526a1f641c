"""`resadapt-eval view`: a static HTML report of a results root (no server, no network, no CDN).

Layout of the site (every link relative, so `DIR/index.html` opens from disk):

    index.html                      per task x backbone: frontier figure and table, strategy table,
                                    every run's summary with CIs, links
    runs/<run>.html                 one run's records: sortable, filterable, paged in the browser
    samples/<task>__<bb>.html       the samples of a task x backbone, filter "A right and B wrong"
    samples/<task>__<bb>/<id>.html  one sample across every run: answer, plan thumbnails, token heatmap
    samples/<task>__<bb>/img/       one sprite sheet of decoded frames per sample (when the data is here)

The numbers (frontier, AUC, cost at 95/99% of vanilla) are analysis.frontier's; this module only lays
them out. Table rows travel as JSON inside each page and are paged by view.js, so a run of 10,000
records is one small page that renders 50 rows at a time.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Iterable

import pandas as pd

from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.analysis import frontier
from resadapt_eval.analysis.view.thumbs import SpriteJob, SpriteMaker
from resadapt_eval.core.types import UserError
from resadapt_eval.pipeline.store import MANIFEST, SAMPLES, SUMMARY, read_json, read_records

RIGHT = 0.5  # a sample is "right" when its main-metric score reaches this (accuracy: correct; IoU: R@0.5)
ASSETS = ("view.css", "view.js")


@dataclass
class Site:
    """What `build_site` wrote: where, how many pages, and why thumbnails are missing where they are."""

    out: Path
    runs: int
    samples: int
    pages: int
    sprites: int
    notes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.out / "index.html"


@dataclass
class Run:
    """One run as the site shows it."""

    key: str
    row: dict[str, Any]
    summary: dict[str, Any]
    manifest: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def label(self) -> str:
        budget = frontier.budget_label(self.row["budget"], float(self.row.get("retention", float("nan"))))
        return f"{self.row['strategy']} b{budget} f{self.row['frames']}"

    @property
    def metric(self) -> str:
        return str(self.row["main_metric"])


def build_site(root: str | Path, out: str | Path, cost: str = "tokens", tasks: Iterable[str] | None = None,
               thumbnails: bool = True, data_roots: dict[str, str] | None = None,
               workers: int | None = None) -> Site:
    """Read every finished run under `root` and write the site to `out` (replacing a previous site there)."""
    start = time.perf_counter()
    root, out = Path(root), Path(out)
    tasks = list(tasks) if tasks else None
    table = frontier.load_runs(root, tasks)
    if table.empty:
        raise UserError(frontier._no_runs_message(root, tasks))
    table = frontier.annotate(table, cost)
    strategies = frontier.strategy_table(table, cost)
    colors = frontier.strategy_colors(table["strategy"])
    for old in ("runs", "samples", "figures"):  # a previous site's pages of runs that are gone must not linger
        shutil.rmtree(out / old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        (out / name).write_bytes(resources.files(__package__).joinpath("assets", name).read_bytes())
    page = Template(resources.files(__package__).joinpath("assets", "page.html").read_text())

    runs = [_load_run(row) for row in table.to_dict("records")]
    site = Site(out, len(runs), 0, 0, 0)
    groups = []
    for (task, backbone), group in table.groupby(frontier.GROUP, sort=True):
        members = [r for r in runs if (r.row["task"], r.row["backbone"]) == (task, backbone)]
        members.sort(key=lambda r: (r.row["strategy"], r.row["tokens"], r.row["frames"]))
        groups.append((task, backbone, _slug(f"{task}__{backbone}"), group, members))
    with SpriteMaker(workers if thumbnails else 1) as maker:
        # thumbnails decode in worker processes while this one draws the figures and writes the run pages
        sprite_keys = {}
        for task, backbone, gkey, _, members in groups:
            if not thumbnails:
                site.notes[task] = "thumbnails were not requested (--no-thumbnails)"
                continue
            jobs, keys, note = _sprite_jobs(out, task, gkey, members, (data_roots or {}).get(task))
            if note:
                site.notes[task] = note
            maker.submit(gkey, jobs)
            sprite_keys[gkey] = keys
        sections = []
        for task, backbone, gkey, group, members in groups:
            frontier.plot_task(group, cost, out / "figures" / gkey, colors, formats=("svg",))
            sections.append((gkey, f"{task} · {backbone}",
                             _overview_section(task, backbone, gkey, group, strategies, members)))
            for run in members:
                _write(out / "runs" / f"{run.key}.html", page, title=f"{task} · {backbone} · {run.label}",
                       root="../", page_kind="run", body=_run_body(run, gkey), data=_run_data(run, gkey))
                site.pages += 1
        _write(out / "index.html", page, title="resadapt-eval results", root="", page_kind="overview",
               body=_overview_body(root, cost, sections), data={})
        site.pages += 1
        for task, backbone, gkey, _, members in groups:
            sprites = dict(zip(sprite_keys.get(gkey, []), maker.results(gkey)))
            site.sprites += sum("error" not in made for made in sprites.values())
            site.samples += _write_samples(out, page, task, backbone, gkey, members, sprites,
                                           site.notes.get(task, ""), site)
    site.seconds = time.perf_counter() - start
    return site


# -- loading -----------------------------------------------------------------------------------

def _load_run(row: dict[str, Any]) -> Run:
    directory = Path(row["directory"])
    manifest = read_json(directory / MANIFEST) if (directory / MANIFEST).exists() else {}
    key = _slug(f"{row['task']}__{row['backbone']}__{row['strategy']}__b{row['budget']}-f{row['frames']}")
    return Run(key, row, read_json(directory / SUMMARY), manifest, read_records(directory / SAMPLES))


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def _slug(text: str) -> str:
    """A file name for a run or sample id: kept as is when safe, else made safe and told apart by a hash."""
    safe = _UNSAFE.sub("_", text)
    if safe != text or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return safe


def _num(value: Any, digits: int | None = None) -> float | None:
    """A JSON-safe number (NaN and inf become null)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


def _score(record: dict[str, Any], metric: str) -> float | None:
    return _num((record.get("score") or {}).get(metric)) if not record.get("error") else None


# -- writing -----------------------------------------------------------------------------------

def _json_blob(data: Any) -> str:
    """JSON that is safe inside <script type="application/json">."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _write(path: Path, page: Template, title: str, root: str, page_kind: str, body: str, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.substitute(title=html.escape(title), root=root, page=page_kind, body=body,
                                    data=_json_blob(data)), encoding="utf-8")


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _html_table(df: pd.DataFrame, formats: dict[str, Any], links: dict[str, list[str]] | None = None,
                css: str = "sortable") -> str:
    """A server-side table (small: one row per run or strategy); numeric cells carry their raw value
    for view.js's sorting."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for i, rec in enumerate(df.to_dict("records")):
        cells = []
        for col, v in rec.items():
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            text = "" if missing else (formats[col](v) if col in formats else str(v))
            raw = _num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
            attr = f' data-v="{raw}"' if raw is not None else ""
            href = (links or {}).get(col)
            inner = f'<a href="{_esc(href[i])}">{_esc(text)}</a>' if href and href[i] else _esc(text)
            cells.append(f"<td{attr}>{inner}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


# -- overview ----------------------------------------------------------------------------------

def _overview_section(task: str, backbone: str, gkey: str, group: pd.DataFrame, strategies: pd.DataFrame,
                      members: list[Run]) -> str:
    table = frontier.frontier_table(group)
    keys = {(r.row["strategy"], r.row["budget"], r.row["frames"]): r.key for r in members}
    run_links = [f"runs/{keys[(s, b, f)]}.html" for s, b, f in zip(table["strategy"], table["budget"], table["frames"])]
    shown = table.drop(columns=["task", "backbone"])
    strat = strategies[(strategies["task"] == task) & (strategies["backbone"] == backbone)].drop(
        columns=["task", "backbone"])
    summaries = _summary_table(members)
    metric = members[0].metric if members else ""
    return (f'<section id="{_esc(gkey)}"><h2>{_esc(task)} · {_esc(backbone)}</h2>'
            f'<p><a href="samples/{_esc(gkey)}.html">samples of {_esc(task)}: compare runs, filter where one '
            f'strategy is right and another wrong</a></p>'
            f'<figure><img class="frontier" src="figures/{_esc(gkey)}.svg" alt="frontier of {_esc(task)}">'
            f'<figcaption>{_esc(frontier.metric_label(metric))} against cost; the grey step is the Pareto '
            f'frontier, bars are 95% bootstrap CIs.</figcaption></figure>'
            f'<h3>Frontier</h3>{_html_table(shown, frontier.RUN_FORMATS, {"strategy": run_links})}'
            f'<h3>Strategies</h3><p class="note">AUC over log cost; cost (the frontier\'s axis) to reach 95% '
            f'and 99% of vanilla\'s score.</p>{_html_table(strat, frontier.STRATEGY_FORMATS)}'
            f'<h3>Runs</h3>{summaries}</section>')


def _summary_table(members: list[Run]) -> str:
    """Every run's summary: each metric with its 95% CI, errors, infeasible plans, mean costs, link."""
    metrics = sorted({m for r in members for m in r.summary.get("metrics", {})},
                     key=lambda m: (m != (members[0].metric if members else ""), m))
    head = ["run", "n", "errors", "infeasible"] + metrics + ["retention", "tokens", "GFLOPs", "latency s"]
    rows = []
    for r in members:
        s = r.summary
        cells = [f'<td><a href="runs/{_esc(r.key)}.html">{_esc(r.label)}</a></td>']
        for v in (s.get("n"), s.get("n_errors"), s.get("n_infeasible")):
            cells.append(f'<td data-v="{_num(v)}">{_esc(v)}</td>')
        for m in metrics:
            block = s.get("metrics", {}).get(m) or {}
            v, lo, hi = (_num(block.get(k)) for k in ("value", "ci_low", "ci_high"))
            text = "" if v is None else f"{v:.1f} [{lo or 0:.1f}, {hi or 0:.1f}]"
            cells.append(f'<td data-v="{v}">{_esc(text)}</td>')
        for v, fmt in ((s.get("retention_mean"), "{:.3f}"), (s.get("tokens_mean"), "{:.1f}"),
                       ((s.get("flops_mean") or 0) / 1e9 if s.get("flops_mean") else None, "{:.3f}"),
                       ((s.get("timings_mean") or {}).get("e2e"), "{:.3f}")):
            v = _num(v)
            cells.append(f'<td data-v="{v}">{"" if v is None else fmt.format(v)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head_html = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head_html}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _overview_body(root: Path, cost: str, sections: list[tuple[str, str, str]]) -> str:
    toc = "".join(f'<li><a href="#{_esc(gkey)}">{_esc(title)}</a></li>' for gkey, title, _ in sections)
    return (f'<h1>Results under {_esc(root)}</h1><p class="note">Cost axis: {_esc(frontier.COST_LABELS[cost])}. '
            f'Scores are the task\'s main metric x 100 with 95% bootstrap CIs. Click a column header to sort.</p>'
            f'<ul class="toc">{toc}</ul>' + "".join(body for _, _, body in sections))


# -- one run -----------------------------------------------------------------------------------

def _run_body(run: Run, gkey: str) -> str:
    s = run.summary
    block = s.get("metrics", {}).get(run.metric) or {}
    v, lo, hi = (_num(block.get(k)) for k in ("value", "ci_low", "ci_high"))
    ci = "" if v is None else f"{v:.1f} [{lo or 0:.1f}, {hi or 0:.1f}]"
    return (f'<h1>{_esc(run.row["task"])} · {_esc(run.row["backbone"])} · {_esc(run.label)}</h1>'
            f'<p>{_esc(run.metric)} {_esc(ci)} over {_esc(s.get("n_scored"))} scored samples, '
            f'{_esc(s.get("n_errors"))} errors; mean retention {_esc(_fmt(s.get("retention_mean"), 3))}, '
            f'mean tokens {_esc(_fmt(s.get("tokens_mean"), 1))}. Config hash {_esc(s.get("config_hash"))}; '
            f'<a href="../samples/{_esc(gkey)}.html">all samples of this task</a>.</p>'
            '<div class="controls"><label>filter <input id="filter" type="search" placeholder="id or error"></label> '
            '<label>show <select id="show"><option value="all">all</option><option value="right">right</option>'
            '<option value="wrong">wrong</option><option value="error">errors</option></select></label></div>'
            '<div id="records"></div>')


def _fmt(value: Any, digits: int) -> str:
    v = _num(value)
    return "" if v is None else f"{v:.{digits}f}"


def _run_data(run: Run, gkey: str) -> dict[str, Any]:
    rows = []
    for r in run.records:
        score = _score(r, run.metric)
        rows.append([str(r["id"]), score, _num(r.get("tokens")), _num(r.get("retention"), 4),
                     _num((r.get("timings") or {}).get("e2e"), 4), r.get("error"),
                     f"../samples/{gkey}/{_slug(str(r['id']))}.html"])
    return {"metric": run.metric, "right": RIGHT, "rows": rows}


# -- samples -----------------------------------------------------------------------------------

def _sprite_jobs(out: Path, task: str, gkey: str, members: list[Run],
                 data_root: str | None) -> tuple[list[SpriteJob], list[tuple[str, int]], str]:
    """One sheet per sample and frame count, its tile the largest chunk any run planned for it; or
    why there are none (the task's data is not here)."""
    media, note = _media(task, members, data_root)
    jobs, keys = [], []
    if not media:
        return jobs, keys, note
    sizes: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for run in members:
        for r in run.records:
            chunks = (r.get("plan") or {}).get("chunks")
            if chunks:
                sizes.setdefault((str(r["id"]), run.row["frames"]), []).extend(chunks)
    (out / "samples" / gkey / "img").mkdir(parents=True, exist_ok=True)
    for (sid, n), hw in sizes.items():
        if sid not in media or media[sid][1] is None:
            continue
        tile = (max(h for h, _ in hw), max(w for _, w in hw))
        jobs.append(SpriteJob(str(out / "samples" / gkey / "img" / f"{_slug(sid)}-f{n}.jpg"),
                              media[sid][0], media[sid][1], n, tile))
        keys.append((sid, n))
    return jobs, keys, note


def _write_samples(out: Path, page: Template, task: str, backbone: str, gkey: str, members: list[Run],
                   sprites: dict[tuple[str, int], dict[str, Any]], note: str, site: Site) -> int:
    """The samples list of one task x backbone and a page per sample; returns how many samples."""
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for run in members:
        for r in run.records:
            by_id.setdefault(str(r["id"]), {})[run.key] = r
    ids = list(by_id)
    adapter = _adapter_name(members)
    factor2 = _factor_squared(members)

    marks_rows = []
    for sid in ids:
        recs = by_id[sid]
        first = next(iter(recs.values()))
        marks = "".join(_mark(recs.get(run.key), run.metric) for run in members)
        marks_rows.append({"id": sid, "href": f"{gkey}/{_slug(sid)}.html", "target": _short(first.get("target")),
                           "marks": marks})
        data = _sample_data(sid, task, backbone, gkey, members, recs, adapter, factor2, sprites, note)
        _write(out / "samples" / gkey / f"{_slug(sid)}.html", page, title=f"{task} · {sid}", root="../../",
               page_kind="sample", body=_sample_body(task, backbone, gkey, sid), data=data)
        site.pages += 1
    runs = [{"key": r.key, "label": r.label, "href": f"../runs/{r.key}.html"} for r in members]
    body = (f'<h1>Samples of {_esc(task)} · {_esc(backbone)}</h1>'
            f'<p class="note">A sample is right in a run when its {_esc(members[0].metric)} score is at least '
            f'{RIGHT} (accuracy: correct; IoU: R@{RIGHT}). Cells: ✓ right, ✗ wrong, ! error, · not run.</p>'
            '<div class="controls"><label>right in <select id="run-a"></select></label> '
            '<label>wrong in <select id="run-b"></select></label> <span id="ab-count"></span> '
            '<label>filter <input id="filter" type="search" placeholder="id"></label></div>'
            '<div id="samples"></div>')
    _write(out / "samples" / f"{gkey}.html", page, title=f"samples of {task} · {backbone}", root="../",
           page_kind="samples", body=body, data={"runs": runs, "samples": marks_rows})
    site.pages += 1
    return len(ids)


def _mark(record: dict[str, Any] | None, metric: str) -> str:
    if record is None:
        return "-"
    if record.get("error"):
        return "!"
    score = _score(record, metric)
    return "1" if score is not None and score >= RIGHT else "0"


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _adapter_name(members: list[Run]) -> str:
    for run in members:
        card = (run.manifest.get("config") or {}).get("card") or {}
        if card.get("adapter"):
            return str(card["adapter"])
    return ""


def _factor_squared(members: list[Run]) -> float | None:
    """Pixels per visual token (f^2) for records written before `chunk_tokens` was recorded: without a
    token reduction, a plan's tokens are the sum of its chunks' (h/f)(w/f), so f^2 = sum(h w) / tokens."""
    for run in members:
        for r in run.records:
            plan = r.get("plan") or {}
            if plan.get("chunks") and not plan.get("reduction") and r.get("tokens"):
                return sum(h * w for h, w in plan["chunks"]) / float(r["tokens"])
    return None


def _media(task: str, members: list[Run], data_root: str | None) -> tuple[dict[str, tuple[str, Any]], str]:
    """Each sample's (kind, media) from the task's data, or why there is none. The data is read where
    the runs' manifest says (or at `data_root`); nothing is generated or downloaded."""
    card_dict = next(((r.manifest.get("config") or {}).get("card") for r in members
                      if (r.manifest.get("config") or {}).get("card")), None)
    if not card_dict:
        return {}, "the runs' manifests do not name the task's data"
    root = Path(data_root or card_dict["data_root"])
    if not root.is_dir():
        return {}, (f"thumbnails need the task's data: {root} is not here; pass --data-root {task}=DIR "
                    f"(the plan is shown without them)")
    card = TaskCard(name=str(card_dict["name"]), adapter=str(card_dict["adapter"]), data_root=root,
                    frames=int(card_dict["frames"]), max_new_tokens=int(card_dict["max_new_tokens"]),
                    options=dict(card_dict.get("options") or {}), root_given=True)
    try:
        samples = ADAPTERS.get(card.adapter)().load(card)
    except Exception as e:  # a partial or foreign data root: say so, show the plan anyway
        return {}, f"thumbnails unavailable: cannot read {task}'s data at {root} ({type(e).__name__}: {e})"
    return {s.id: (s.media_kind, s.media) for s in samples}, ""


def _evidence(first: dict[str, Any], adapter: str) -> dict[str, Any] | None:
    """Where the answer is: a probe's recorded evidence, or Charades-STA's ground-truth window."""
    ev = (first.get("meta") or {}).get("evidence")
    if ev:
        return {"seconds": ev.get("seconds"), "frames": ev.get("frames"), "box": ev.get("box"),
                "label": ev.get("texture") or ev.get("kind") or "evidence"}
    if adapter == "charades_sta" and isinstance(first.get("target"), (list, tuple)) and len(first["target"]) == 2:
        return {"seconds": [float(t) for t in first["target"]], "frames": None, "box": None,
                "label": "ground-truth window"}
    return None


def _sample_data(sid: str, task: str, backbone: str, gkey: str, members: list[Run],
                 recs: dict[str, dict[str, Any]], adapter: str, factor2: float | None,
                 sprites: dict[tuple[str, int], dict[str, Any]], note: str) -> dict[str, Any]:
    first = next(iter(recs.values()))
    runs = []
    for run in members:
        r = recs.get(run.key)
        if r is None:
            continue
        plan = r.get("plan") or {}
        chunks = plan.get("chunks") or []
        tokens = r.get("chunk_tokens")
        if tokens is None and chunks and factor2:
            tokens = [round(h * w / factor2) for h, w in chunks]
        sprite = sprites.get((sid, run.row["frames"]))
        times = r.get("frame_times")
        indices = r.get("frame_indices")
        positions = plan.get("frames") or []
        if sprite and "error" not in sprite:
            if times is None:
                times = [sprite["times"][p] for p in positions if p < len(sprite["times"])]
            if indices is None:
                indices = [sprite["indices"][p] for p in positions if p < len(sprite["indices"])]
        runs.append({
            "key": run.key, "label": run.label, "strategy": run.row["strategy"], "href": f"../../runs/{run.key}.html",
            "metric": run.metric, "score": _score(r, run.metric), "right": _mark(r, run.metric) == "1",
            "prediction": r.get("prediction"), "parsed": r.get("parsed"), "error": r.get("error"),
            "tokens": _num(r.get("tokens")), "vanilla": _num(r.get("vanilla_tokens")),
            "retention": _num(r.get("retention"), 4), "positions": positions, "chunks": chunks,
            "chunk_tokens": tokens, "times": times, "indices": indices, "scales": plan.get("scales"),
            "reduction": plan.get("reduction"), "feasible": plan.get("feasible"), "note": plan.get("note"),
            "sprite": None if not sprite or "error" in sprite else
            {"src": f"img/{_slug(sid)}-f{run.row['frames']}.jpg", **sprite},
            "sprite_error": (sprite or {}).get("error"),
        })
    return {"id": sid, "task": task, "backbone": backbone, "target": first.get("target"),
            "meta": {k: v for k, v in (first.get("meta") or {}).items() if k != "evidence"},
            "evidence": _evidence(first, adapter), "note": note, "samples": f"../{gkey}.html", "runs": runs}


def _sample_body(task: str, backbone: str, gkey: str, sid: str) -> str:
    return (f'<h1>{_esc(task)} · {_esc(sid)}</h1>'
            f'<p><a href="../{_esc(gkey)}.html">all samples of {_esc(task)} · {_esc(backbone)}</a></p>'
            '<div id="sample-head"></div><h2>Tokens over time</h2><div id="heatmap"></div>'
            '<h2>Runs</h2><div id="runs"></div>')
