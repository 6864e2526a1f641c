"""`resadapt-eval`: run a benchmark under a visual-token budget, draw the frontier, list what is available.

Errors in what the user typed end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from resadapt_eval.pipeline.distributed import is_main_process
from resadapt_eval.core.types import DiskFull, UserError

ALLOCATOR_STRATEGIES = ("resadapt", "resadapt-budget")  # the strategies that take --allocator

EXIT_USAGE = 2
EXIT_DISK_FULL = 1


class _OneLineErrorsMixin:
    """Usage and input errors print one line (`error: ...`) and exit 2, instead of a traceback."""

    def main(self, args=None, prog_name=None, **extra):  # type: ignore[override]
        try:
            return super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.UsageError as e:
            click.echo(f"error: {e.format_message()} (see --help)", err=True)
            sys.exit(EXIT_USAGE)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        except DiskFull as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_DISK_FULL)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)


class OneLineErrors(_OneLineErrorsMixin, click.Group):
    """The command group, with one-line errors."""


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Budget-controlled evaluation of multimodal LLMs: how much accuracy each way of spending a
    visual-token budget buys.

    \b
    Example:
      resadapt-eval run --task videomme --backbone Qwen/Qwen2.5-VL-7B-Instruct \\
                        --strategy uniform-scale --budget 0.25 --frames 32
    """


def shared_options(f):
    """Options common to `run` and `sweep`."""
    for option in reversed(_SHARED):
        f = option(f)
    return f


_SHARED = [
    click.option("--backbone", default="tiny-bundled", show_default=True,
                 help="Bundled alias, local checkpoint folder, or hub id (Qwen2.5-VL / Qwen3-VL)."),
    click.option("--budget-at-frames", "--budget-ref-frames", "budget_ref_frames", type=int, default=None,
                 help="Count the budget against vanilla at this many frames (e.g. 8 while --frames 128). "
                      "(--budget-ref-frames is its former name.)"),
    click.option("--limit", type=int, default=None, help="Evaluate only the first N samples."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice."),
    click.option("--out", default="results", show_default=True, help="Results root."),
    click.option("--data-root", default=None, help="Where the task's data is (overrides the card)."),
    click.option("--max-new-tokens", type=int, default=None, help="Generation length (default: the task card's)."),
    click.option("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)."),
    click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]),
                 help="Default: bfloat16 on CUDA, float32 on CPU."),
    click.option("--attn", default=None, type=click.Choice(["sdpa", "eager", "flash_attention_2"]),
                 help="Default: flash_attention_2 when installed on CUDA, else sdpa."),
    click.option("--protocol", default=None, type=click.Choice(["fixed", "qwen", "lmms-eval", "resadapt-paper"]),
                 help="Reference protocol that defines vanilla (frames, pixels, text positions): fixed (N frames "
                      "uniformly, processor caps), qwen (qwen-vl-utils' 2 fps defaults), lmms-eval (its 0.7.3 Qwen "
                      "wrappers), resadapt-paper (2 fps up to --frames, 602,112 px/frame, <= 16,384 video tokens). "
                      "Default: the task card's (fixed). See docs/protocols.md."),
    click.option("--text-resume", default=None, type=click.Choice(["max+1", "hf"]),
                 help="Where text positions resume after a video: max+1 (original Qwen, vLLM) or hf (transformers "
                      "5.x). Default: the protocol's (hf for lmms-eval, max+1 otherwise)."),
    click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE",
                 help="Override a task-card setting, e.g. prompt_variant=qwen3_vl (repeatable; values are YAML)."),
    click.option("--judge-url", default=None,
                 help="OpenAI-compatible endpoint for answers the rules cannot read (tasks that support a judge); "
                      "the key is read from the environment and never recorded."),
    click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with the checkpoint to run."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
    click.option("--prefetch", type=click.IntRange(0, 64), default=None,
                 help="Samples decoded, planned and preprocessed ahead in a background thread while the model "
                      "runs (0: no thread). Default: 2 on a GPU, 0 on the CPU (where the model's threads already "
                      "fill the cores). Never changes results."),
    click.option("--max-error-rate", type=click.FloatRange(0, 1), default=0.05, show_default=True,
                 help="Exit 1 (after writing everything) when a larger share of samples ended in error records."),
]

EXIT_TOO_MANY_ERRORS = 1


def _quiet_libraries() -> None:
    """--no-progress also hides the libraries' bars (transformers' "Loading weights" on stderr), so
    stderr holds only what the harness says, e.g. a one-line error."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def _error_gate(results, max_rate: float) -> None:
    """Every record and summary is written by now; a run whose error share is over the limit still
    fails, so a pipeline never mistakes a half-broken dataset for a result."""
    over = [r for r in results if r.summary["n"] and r.summary["n_errors"] / r.summary["n"] > max_rate]
    if not over:
        return
    for r in over if is_main_process() else []:
        s = r.summary
        click.echo(f"error: {s['n_errors']} of {s['n']} samples ({100 * s['n_errors'] / s['n']:.1f}%) ended in "
                   f"error records, over --max-error-rate {100 * max_rate:g}%: see {r.directory / 'summary.json'} "
                   f"(errors) and fix the data, or raise --max-error-rate", err=True)
    sys.exit(EXIT_TOO_MANY_ERRORS)


@main.command()
@click.option("--task", required=True,
              help="Task card name (see `resadapt-eval list tasks`) or a card file, path/to/card.yaml.")
@click.option("--strategy", default="uniform-scale", show_default=True,
              help="How to spend the budget (`list strategies`), NAME or NAME+KEY=VALUE (fastv+layer=2); at budget "
                   "1.0 uniform-scale is the vanilla input.")
@click.option("--budget", default="1.0", show_default=True,
              help="Share of vanilla visual tokens per sample: 0.25, 25%, or an absolute tokens=4096.")
@click.option("--frames", type=int, default=None, help="Frames sampled uniformly per video (default: the task card's).")
@click.option("--strategy-option", "strategy_option", multiple=True, metavar="KEY=VALUE",
              help="A strategy setting, e.g. layer=2 for fastv or frame_share=0.5 (repeatable; values are YAML).")
@click.option("--allocator", default=None, type=click.Path(exists=True, file_okay=False),
              help="With --strategy resadapt or resadapt-budget: an allocator folder (train-allocator output, or an original "
                   "ResAdapt smol_allocator, which also needs --trust-remote-code).")
@shared_options
def run(**kw) -> None:
    """Evaluate one task under one strategy and budget; writes samples.jsonl, summary.json and
    manifest.json under OUT/<task>/<backbone>/<strategy>/b<budget>-f<frames>/ and resumes there."""
    from resadapt_eval.pipeline.runner import RunConfig, run as run_config

    _check_positive(kw, "frames", "limit", "max_new_tokens", "budget_ref_frames")
    progress = not kw.pop("no_progress")
    if not progress:
        _quiet_libraries()
    max_error_rate = kw.pop("max_error_rate")
    from resadapt_eval.pipeline.grid import expand, parse_spec

    spec = parse_spec(kw["strategy"])
    options = {**_parse_options(kw.pop("strategy_option"), "--strategy-option"), **spec.options}
    allocator = kw.pop("allocator")
    if allocator is not None and spec.name not in ALLOCATOR_STRATEGIES:
        raise UserError("--allocator only applies to --strategy resadapt or resadapt-budget")
    [spec] = expand([replace(spec, options=options)], allocator=allocator,
                    trust_remote_code=kw["trust_remote_code"])
    kw["strategy"], kw["strategy_options"] = spec.name, spec.options
    task_options = _parse_options(kw.pop("task_option"))
    judge_url = kw.pop("judge_url")
    if judge_url:
        task_options["judge_url"] = judge_url
    result = run_config(RunConfig(progress=progress, task_options=task_options, **kw))
    _report(result)
    _error_gate([result], max_error_rate)


@main.group()
def probe() -> None:
    """Generated probe tasks that run anywhere (see resadapt_eval/probes.py)."""


@probe.command(name="build")
@click.option("--task", "tasks", multiple=True, required=True,
              type=click.Choice(["probe-videoqa", "probe-longvideo", "probe-grounding", "probe-math", "probe-which"]),
              help="Probe to build (repeatable).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["dev", "test"]),
              help="Which split (its seed and folder from the task card): dev for development, test for reporting.")
@click.option("--seed", type=int, default=None, help="Another evaluation seed (training uses >= 1,000,000); needs --out.")
@click.option("--n", type=int, default=200, show_default=True, help="Number of samples.")
@click.option("--out", default=None, help="Data root (default: the task card's, $RESADAPT_HOME/probes/<task>/<split>).")
def probe_build(tasks: tuple[str, ...], split: str, seed: int | None, n: int, out: str | None) -> None:
    """Write a probe's evaluation split in the layout of the benchmark it mirrors."""
    from resadapt_eval.adapters.base import TaskCard
    from resadapt_eval.probes import TRAIN_SEED_BASE, build

    if seed is not None and seed >= TRAIN_SEED_BASE:
        raise UserError(f"--seed must be below {TRAIN_SEED_BASE}: higher seeds are the bundled model's training data")
    if seed is not None and out is None:
        raise UserError("--seed without --out would put another seed in a split's folder; pass --out, or --split")
    for task in tasks:
        card = TaskCard.load(task, overrides={"split": split})
        root = (out if len(tasks) == 1 else f"{out}/{task}") if out else str(card.data_root)
        used = card.probe["seed"] if seed is None else seed
        path = build(task, root, seed=used, n=n)
        click.echo(f"{task}: {n} samples ({split if seed is None else 'custom'} split, seed {used}) in {path}")


def _sweep_file(ctx, _param, path):
    """--config FILE: a YAML mapping of sweep options (lists allowed) used as defaults; flags win.

    Keys are the option names (`task-option` or `task_option`); repeatable options take a list of
    KEY=VALUE strings or a mapping (`task-option: {prompt_variant: qwen3_vl}`)."""
    if path is None:
        return
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise click.BadParameter(f"{path} must hold a mapping of sweep options", param_hint="--config")
    params = {p.name: p for p in ctx.command.params}
    params["frames"] = params["frames_list"]
    params["budget_at_frames"] = params["budget_ref_frames"]  # the option's name; its parameter keeps the former one
    unknown = sorted(k for k in raw if str(k).replace("-", "_") not in params)
    if unknown:
        raise click.BadParameter(f"{path}: unknown option(s) {', '.join(map(str, unknown))}", param_hint="--config")

    def value(param, v):
        if getattr(param, "multiple", False):
            if isinstance(v, dict):  # values written back as JSON, which the option reads as YAML
                return [f"{k}={json.dumps(x)}" for k, x in v.items()]
            return [str(x) for x in (v if isinstance(v, list) else [v])]
        if isinstance(v, list):
            return ",".join(str(x) for x in v)
        return v
    ctx.default_map = {params[k.replace("-", "_")].name: value(params[k.replace("-", "_")], v) for k, v in raw.items()}


@main.command()
@click.option("--config", type=click.Path(exists=True, dir_okay=False), callback=_sweep_file, is_eager=True,
              expose_value=False, help="YAML file of these options (tasks, strategies, budgets, ...); flags override it.")
@click.option("--tasks", required=True, help="Comma-separated task names.")
@click.option("--strategies", default="vanilla,uniform-scale,uniform-frames,random-drop", show_default=True,
              help="Comma-separated strategies, each NAME or NAME+KEY=VALUE[+KEY=VALUE] "
                   "(e.g. uniform-scale,fastv+layer=2,resadapt+allocator=PATH).")
@click.option("--budgets", default="0.1,0.25,0.5,1.0", show_default=True, help="Comma-separated budgets.")
@click.option("--frames", "frames_list", default=None, help="Comma-separated frame counts (default: each card's).")
@click.option("--strategy-option", "strategy_option", multiple=True, metavar="KEY=VALUE",
              help="A setting for every strategy of the grid that has it, e.g. frame_share=0.5 (repeatable; "
                   "values are YAML; an option written in --strategies wins).")
@click.option("--allocator", default=None, type=click.Path(exists=True, file_okay=False),
              help="resadapt's allocator folder (train-allocator output, or an original ResAdapt smol_allocator, "
                   "which also needs --trust-remote-code), for every resadapt entry that names none.")
@shared_options
def sweep(tasks: str, strategies: str, budgets: str, frames_list: str | None, strategy_option, allocator,
          **kw) -> None:
    """Run every task x strategy x budget with one backbone load; each configuration resumes on its own.
    Everything is checked before the backbone loads, so a bad grid fails before its first configuration."""
    import time as _time

    from resadapt_eval.pipeline.grid import expand, split_list
    from resadapt_eval.pipeline.runner import RunConfig, sweep as run_sweep

    _check_positive(kw, "limit", "max_new_tokens", "budget_ref_frames")
    kw["progress"] = not kw.pop("no_progress")
    if not kw["progress"]:
        _quiet_libraries()
    max_error_rate = kw.pop("max_error_rate")
    task_options = _parse_options(kw.pop("task_option"))
    judge_url = kw.pop("judge_url")
    if judge_url:
        task_options["judge_url"] = judge_url
    try:
        frames = [int(x) for x in _split(frames_list)] if frames_list else None
    except ValueError:
        raise UserError(f"--frames wants comma-separated frame counts, got {frames_list!r}") from None
    specs = expand(split_list(strategies), _parse_options(strategy_option, "--strategy-option"), allocator,
                   kw["trust_remote_code"])
    base = RunConfig(task="", task_options=task_options, **kw)
    start = _time.perf_counter()
    results = run_sweep(base, _split(tasks), specs, _split(budgets), frames, on_result=_report)
    if is_main_process():
        click.echo(f"{len(results)} configurations in {_time.perf_counter() - start:.1f} s")
    _error_gate(results, max_error_rate)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _report(result) -> None:
    if not is_main_process():  # under torchrun, rank 0 speaks for the run
        return
    s = result.summary
    m = s["metrics"][s["main_metric"]]
    click.echo(f"{s['task']} {s['backbone']} {s['strategy']} b{s['budget']} f{s['frames']}: "
               f"{s['main_metric']} {m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}] n={s['n_scored']} "
               f"errors={s['n_errors']} retention={_fmt(s['retention_mean'])} tokens={_fmt(s['tokens_mean'], 1)} "
               f"-> {result.directory}")
    t, flops = s.get("timings_mean") or {}, s.get("flops_planner_mean")
    if t.get("plan", 0) > 0.001 and t.get("backbone_total"):  # a planner that looks at the input costs something
        click.echo(f"  planner {t['plan'] * 1000:.1f} ms/sample = {100 * t['plan'] / t['backbone_total']:.1f}% of the "
                   f"backbone's {t['backbone_total'] * 1000:.1f} ms" + (f"; {flops / 1e6:.0f} MFLOPs" if flops else ""))


@main.command()
@click.option("--out", default=None, help="Results root of the sweep and the frontier (default: results; results/dev for --split dev).")
@click.option("--backbone", default="tiny-bundled", show_default=True)
@click.option("--tasks", default="probe-videoqa,probe-longvideo,probe-grounding,probe-math", show_default=True)
@click.option("--strategies", default=None, help="Comma-separated (default: every registered strategy).")
@click.option("--budgets", default="0.1,0.25,0.5,1.0", show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N samples of each task (a quick look).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["dev", "test"]),
              help="Probe split: test (held out, what is reported) or dev (for development).")
def demo(out: str, backbone: str, tasks: str, strategies: str | None, budgets: str, limit: int | None,
         split: str) -> None:
    """Run the demo sweep on the probes and draw its accuracy-vs-tokens frontier (`make demo`)."""
    from resadapt_eval.tools.demo import run_demo

    out = out or ("results" if split == "test" else "results/dev")
    done = run_demo(out, backbone, _split(tasks), _split(strategies) if strategies else None, _split(budgets),
                    limit, on_result=_report, split=split)
    table = done.frontier["strategies"][["task", "strategy", "best_score", "auc_logcost", "cost_at_95"]]
    click.echo(f"{split} split")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    click.echo(f"{len(done.results)} configurations in {done.sweep_s:.1f} s, frontier in {done.frontier_s:.1f} s")
    click.echo(f"figures: {done.frontier['grid'][0]}, {done.frontier['costs'][0]} (tokens and FLOPs side by side) "
               f"and one per task; tables: "
               f"{', '.join(map(str, done.frontier['tables']))}")
    click.echo(f"report: {done.site.index} ({done.site.pages} pages in {done.site.seconds:.1f} s; open it in a browser)")


# The cost axes of resadapt_eval.analysis.frontier.COSTS, spelled out so `--help` needs no pandas import.
COST_AXES = ["tokens", "retention", "patches", "flops", "latency"]


@main.command()
@click.argument("root", default="results", required=False)
@click.option("--out", default=None, help="Where figures and tables go (default: ROOT/frontier).")
@click.option("--cost", default="tokens", show_default=True, type=click.Choice(COST_AXES),
              help="Cost axis: LLM visual tokens, retention, encoder patches, prefill FLOPs or end-to-end latency.")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable; default: every task under ROOT).")
@click.option("--subset", default="all", show_default=True, type=click.Choice(["all", "sensitive"]),
              help="sensitive: only the samples whose vanilla answer changes under uniform-scale at --subset-budget.")
@click.option("--subset-budget", default="0.25", show_default=True, help="The budget that defines the sensitive subset.")
def frontier(root: str, out: str | None, cost: str, tasks: tuple[str, ...], subset: str, subset_budget: str) -> None:
    """Accuracy-vs-cost Pareto frontier of the finished runs under ROOT (default: results).

    \b
    Writes to OUT: frontier.csv/.md (every run, on_frontier marked), strategies.csv/.md
    (per strategy: area under its curve over log cost, cost to reach 95%/99% of vanilla, and each
    run against uniform-scale at matched retention: paired difference, 95% CI, p; also paired.csv/.md),
    one figure per task x backbone, the grid figure frontier.png/.svg, frontier-costs.png/.svg
    (tokens and FLOPs side by side) and per-sample allocation heatmaps of video tasks.
    """
    import warnings

    from resadapt_eval.analysis.frontier import build

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default_out = f"{root}/frontier" if subset == "all" else f"{root}/frontier-{subset}-b{subset_budget}"
        result = build(root, out or default_out, cost=cost, tasks=tasks or None, subset=subset,
                       subset_budget=subset_budget)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    runs = result["runs"]
    click.echo(f"{len(runs)} runs, {runs.groupby(['task', 'backbone']).ngroups} task x backbone, cost axis {cost}")
    if result.get("subset") is not None:
        click.echo(f"sensitive subset (vanilla answer changes under uniform-scale at {subset_budget}): "
                   + ", ".join(f"{k} {n} samples" for k, n in result["subset"].items()))
    click.echo("figures: " + " ".join(str(p) for p in result["figures"] + result["grid"] if p.suffix == ".png")
               + " (and .svg)")
    click.echo("tables:  " + " ".join(str(p) for p in result["tables"]))


@main.command()
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--metric", default=None, help="Score to compare (default: RUN_A's main metric).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the paired bootstrap.")
@click.option("--json", "json_path", default=None, help="Also write the comparison as JSON here.")
def compare(run_a: str, run_b: str, metric: str | None, seed: int, json_path: str | None) -> None:
    """Paired comparison of RUN_B against RUN_A on the samples both scored.

    \b
    Prints B - A in points with a 95% paired bootstrap CI, and the exact McNemar p-value for a
    binary score (accuracy) or the paired bootstrap's for a continuous one (IoU).
    """
    from resadapt_eval.analysis.paired import compare_runs, describe, format_paired, load_run
    from resadapt_eval.pipeline.store import write_json

    result = compare_runs(run_a, run_b, metric, seed)
    click.echo(format_paired(result, f"{run_a}  [{describe(load_run(run_a)[0])}]",
                             f"{run_b}  [{describe(load_run(run_b)[0])}]"))
    if json_path:
        from pathlib import Path

        write_json(Path(json_path), {"run_a": run_a, "run_b": run_b, **result.to_json()})


@main.command()
@click.argument("root", default="results", required=False)
@click.option("--out", default=None, help="Where the site goes (default: ROOT/view); open OUT/index.html.")
@click.option("--cost", default="tokens", show_default=True, type=click.Choice(COST_AXES),
              help="Cost axis of the frontier and the strategy table.")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable; default: every task under ROOT).")
@click.option("--data-root", "data_roots", multiple=True, metavar="TASK=DIR",
              help="Where a task's data lies, for thumbnails (default: where the runs' manifests say).")
@click.option("--thumbnails/--no-thumbnails", default=True, show_default=True,
              help="Decode each sample's frames for the sample pages (needs the task's data).")
def view(root: str, out: str | None, cost: str, tasks: tuple[str, ...], data_roots: tuple[str, ...],
         thumbnails: bool) -> None:
    """A static HTML report of the finished runs under ROOT: frontier, tables, every run's records and,
    per sample, what each strategy planned (frames, resolutions, tokens over time) and answered.

    \b
    Self-contained: plain HTML, CSS and JavaScript, no server and no network; open OUT/index.html.
    """
    import warnings

    from resadapt_eval.analysis.view import build_site

    roots = {}
    for item in data_roots:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise UserError(f"--data-root {item!r}: expected TASK=DIR, e.g. --data-root videomme=/data/videomme")
        roots[task] = path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        site = build_site(root, out or f"{root}/view", cost=cost, tasks=tasks or None, thumbnails=thumbnails,
                          data_roots=roots)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    for task, note in sorted(site.notes.items()):
        click.echo(f"{task}: {note}", err=True)
    click.echo(f"{site.runs} runs, {site.samples} samples, {site.pages} pages, {site.sprites} thumbnail sheets "
               f"in {site.seconds:.1f} s")
    click.echo(f"report: {site.index}")


BENCH_PARTS = ("overlap", "decode", "memory")


@main.command()
@click.argument("parts", nargs=-1, type=click.Choice(BENCH_PARTS + ("gpu",)))
@click.option("--tasks", default=",".join(("probe-videoqa", "probe-longvideo", "probe-grounding", "probe-math")),
              show_default=True, help="overlap: the probe sweep's tasks.")
@click.option("--strategies", default="vanilla,uniform-scale,uniform-frames,random-drop", show_default=True,
              help="overlap: the sweep's strategies.")
@click.option("--budgets", default="0.1,0.25,0.5,1.0", show_default=True, help="overlap: the sweep's budgets.")
@click.option("--limit", type=int, default=50, show_default=True, help="overlap: samples per configuration.")
@click.option("--data-root", default=None, help="overlap: data of a single task somewhere else than its card says.")
@click.option("--prefetch", "prefetch_list", default="2,0", show_default=True,
              help="overlap, gpu: prefetch depths to time, each a full sweep (0: no prefetch, for contrast).")
@click.option("--memory-task", default="probe-videoqa", show_default=True, help="memory: the probe to run.")
@click.option("--memory-sizes", default="200,2000", show_default=True,
              help="memory: sample counts, each in a fresh process.")
@click.option("--decode-frames", type=int, default=32, show_default=True,
              help="decode: frames sampled from the generated 10-minute 720p video.")
@click.option("--json", "json_path", default="results/bench/bench.json", show_default=True,
              help="Where the figures are also written.")
@click.option("--gpu-backbones", default="qwen2.5-vl-7b,qwen3-vl-8b", show_default=True,
              help="gpu: published configurations to build (resadapt_eval/assets/gpu_bench/).")
@click.option("--gpu-strategies", default="vanilla,uniform-scale,visionzip,fastv,resadapt-budget", show_default=True,
              help="gpu: strategies (vanilla runs once per frame count: its input ignores the budget).")
@click.option("--gpu-budgets", default="1.0,0.25,0.1", show_default=True, help="gpu: budgets.")
@click.option("--gpu-frames", default="32,128", show_default=True, help="gpu: frame counts.")
@click.option("--gpu-repeats", type=int, default=2, show_default=True,
              help="gpu: timed repeats per configuration (medians are reported).")
@click.option("--gpu-new-tokens", type=int, default=16, show_default=True,
              help="gpu: tokens generated per sample (end-of-sequence ignored).")
@click.option("--gpu-video", default="1280x720", show_default=True, help="gpu: the generated video's WIDTHxHEIGHT.")
@click.option("--gpu-video-seconds", type=float, default=20.0, show_default=True, help="gpu: its length.")
@click.option("--gpu-video-fps", type=int, default=24, show_default=True, help="gpu: its frame rate.")
@click.option("--gpu-overhead-samples", type=int, default=4, show_default=True,
              help="gpu: samples in each prefetch stream (share of wall time outside the model).")
@click.option("--gpu-tiny", is_flag=True, help="gpu: tiny widths and depths (the CPU test), same geometry.")
@click.option("--gpu-deadline", type=float, default=None,
              help="gpu: seconds after which no new measurement starts (the rest is listed as skipped).")
@click.option("--gpu-device", default=None, help="gpu: torch device (default: cuda when available, else cpu).")
@click.option("--gpu-attn", default=None, help="gpu: attention implementation (default: flash_attention_2 "
              "when flash-attn is installed on CUDA, else sdpa).")
@click.option("--gpu-json", default="docs/gpu-bench-{device}-{date}.json", show_default=True,
              help="gpu: where its report goes ({device} and {date} are filled in).")
def bench(parts: tuple[str, ...], tasks: str, strategies: str, budgets: str, limit: int, data_root: str | None,
          prefetch_list: str,
          memory_task: str, memory_sizes: str, decode_frames: int, json_path: str, **gpu) -> None:
    """Measure the harness itself and print each figure: PARTS of overlap (how much of a probe
    sweep's wall time is not the model's compute, with and without prefetch, and how often it
    loads the backbone), decode (seek decoding against decord's get_batch on a generated 10-minute
    720p video), memory (peak memory at 200 and 2000 samples). Default: all three (several minutes).
    `gpu` (only when named): Qwen2.5-VL-7B and Qwen3-VL-8B from their published configurations with
    random weights, every strategy, budget and frame count, timed per stage (docs/gpu-bench.md).
    """
    from resadapt_eval.tools import bench as b
    from resadapt_eval.pipeline.store import environment

    report: dict = {"command": "resadapt-eval bench " + " ".join(sys.argv[2:]), "environment": environment()}
    for part in parts or BENCH_PARTS:
        click.echo(f"[{part}]")
        if part == "overlap":
            figures = [b.overlap_benchmark(tuple(_split(tasks)), tuple(_split(strategies)), tuple(_split(budgets)),
                                           limit, int(depth), data_root=data_root)
                       for depth in _split(prefetch_list)]
            for f in figures:
                click.echo("  " + "\n  ".join(f.lines()))
            if len(figures) > 1:
                base = figures[-1].wall_s
                click.echo("  " + ", ".join(f"prefetch {f.prefetch} {f.wall_s:.1f} s ({base / f.wall_s:.2f}x)"
                                            for f in figures))
            report[part] = [b.as_json(f) for f in figures]
        elif part == "gpu":
            report[part] = _bench_gpu(gpu, prefetch_list)
        elif part == "memory":
            figure = b.memory_benchmark(memory_task, tuple(int(x) for x in _split(memory_sizes)))
            click.echo("  " + "\n  ".join(figure.lines()))
            report[part] = b.as_json(figure)
        else:
            from resadapt_eval.tools.bench_decode import decode_benchmark
            figure = decode_benchmark(frames=decode_frames)
            click.echo("  " + "\n  ".join(figure.lines()))
            report[part] = b.as_json(figure)
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    click.echo(f"figures written to {path}")


def _bench_gpu(o: dict, prefetch_list: str) -> dict:
    """`bench gpu`: parse its options, run it, print its summary, write its report."""
    from resadapt_eval.tools import bench_gpu as g

    try:
        width, height = (int(x) for x in o["gpu_video"].lower().split("x"))
    except ValueError:
        raise UserError(f"--gpu-video must be WIDTHxHEIGHT, got {o['gpu_video']!r}") from None
    settings = g.GpuBenchSettings(
        backbones=tuple(_split(o["gpu_backbones"])), strategies=tuple(_split(o["gpu_strategies"])),
        budgets=tuple(_split(o["gpu_budgets"])), frames=tuple(int(x) for x in _split(o["gpu_frames"])),
        repeats=o["gpu_repeats"], new_tokens=o["gpu_new_tokens"], video_width=width, video_height=height,
        video_seconds=o["gpu_video_seconds"], video_fps=o["gpu_video_fps"],
        overhead_samples=o["gpu_overhead_samples"], prefetch=tuple(int(x) for x in _split(prefetch_list)),
        device=o["gpu_device"], attn=o["gpu_attn"], tiny=o["gpu_tiny"], deadline_s=o["gpu_deadline"])
    command = "resadapt-eval bench " + " ".join(sys.argv[2:])

    def write(report: dict) -> Path:  # after every group too, so a killed run keeps what it measured
        report["command"] = command
        path = g.json_path(report, o["gpu_json"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        path.with_suffix(".md").write_text(g.markdown(report))
        return path

    report = g.gpu_benchmark(settings, on_progress=write)
    click.echo("  " + "\n  ".join(g.lines(report)))
    path = write(report)
    click.echo(f"  gpu report written to {path} (and {path.with_suffix('.md').name})")
    return report


_GATE = [
    click.option("--alpha", type=float, default=0.05, show_default=True,
                 help="Significance level of the paired test (exact McNemar, or paired bootstrap for IoU)."),
    click.option("--max-drop", type=float, default=None,
                 help="Fail when the main metric drops by more than this many points, significant or not."),
    click.option("--max-retention-rise", type=float, default=0.01, show_default=True,
                 help="Fail when mean retention or tokens rise by more than this fraction of the baseline."),
    click.option("--allow-budget-change", is_flag=True, help="Compare runs of different budgets or frame counts."),
]


def gate_options(f):
    for option in reversed(_GATE):
        f = option(f)
    return f


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--baseline", "--reference", "baseline", required=True,
              help="The baseline run directory, a published-numbers JSON file, or published:NAME for one "
                   "shipped with the package, e.g. published:resadapt-qwen2.5-vl-7b (docs/regression.md). "
                   "(--reference is its former name.)")
@gate_options
@click.option("--tolerance", type=float, default=2.0, show_default=True,
              help="Points a run may fall below a published number (summary-level baselines only).")
@click.option("--out", default=None, help="Where check.json goes (default: RUN_DIR/check.json).")
def check(run_dir: str, baseline: str, out: str | None, **kw) -> None:
    """Gate one run, RUN_DIR, against its baseline: exit 1 when accuracy drops or cost rises, 0 when it holds.

    \b
    Samples are paired by id. Exit 1 when the main metric drops significantly (--alpha) or by
    more than --max-drop points, when mean retention or tokens rise beyond --max-retention-rise,
    or when samples the baseline scored now end in errors. Exit 2 when the runs cannot be
    compared (another task, no common ids, another budget without --allow-budget-change).
    """
    from pathlib import Path

    from resadapt_eval.analysis.check import Limits, check as run_check
    from resadapt_eval.pipeline.store import write_json

    result = run_check(run_dir, baseline, Limits(**kw))
    _print_check(result)
    write_json(Path(out) if out else Path(run_dir) / "check.json", result.to_json())
    sys.exit(0 if result.passed else 1)


@main.command(name="check-baseline")
@click.argument("baseline_root", default="results/baseline", required=False)
@click.option("--out", default="results/check", show_default=True, help="Where the reruns are written.")
@gate_options
def check_baseline(baseline_root: str, out: str, **kw) -> None:
    """Rerun every run committed under BASELINE_ROOT (default: results/baseline) and `check` each against it
    (`make check-baseline`, or `make check`).

    Exit 1 when any check fails; a summary of all of them is written to OUT/check.json."""
    from pathlib import Path

    from resadapt_eval.analysis.check import Limits
    from resadapt_eval.analysis.check_baseline import check_baseline as run_check_baseline
    from resadapt_eval.pipeline.store import write_json

    if Path(out).resolve() == Path(baseline_root).resolve():
        raise UserError("--out must differ from the baseline tree, or the reruns would resume into it")
    results = run_check_baseline(baseline_root, out, Limits(**kw), on_result=lambda r: _print_check(r.result))
    failed = [r for r in results if not r.result.passed]
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / "check.json", {"passed": not failed, "n": len(results), "failed": len(failed),
                                          "checks": [dict(r.result.to_json(), reference_dir=str(r.baseline),
                                                          run_dir=str(r.run)) for r in results]})
    click.echo(f"{len(results) - len(failed)}/{len(results)} configurations pass; details in {out}/check.json")
    sys.exit(1 if failed else 0)


# `recheck`: check-baseline's former name, kept (hidden) for scripts that call it.
main.add_command(click.Command("recheck", callback=check_baseline.callback, params=check_baseline.params,
                               help=check_baseline.help, hidden=True))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--task-option", "task_option", multiple=True, metavar="KEY=VALUE",
              help="Score with this task option over the run's own, e.g. parser=robust (Charades-STA) or "
                   "judge_url=URL (MathVista); repeatable.")
@click.option("--label", default=None, help="Name of the output folder (default: the options, or `current`).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier rescore of the same label.")
def rescore(run_dir: str, task_option: tuple[str, ...], label: str | None, overwrite: bool) -> None:
    """Score RUN_DIR's stored predictions again, without loading a model.

    \b
    Writes RUN_DIR/rescored/LABEL/ (samples.jsonl, summary.json, and rescore.json: which samples'
    scores changed, old and new, and every metric before and after); RUN_DIR itself is not touched.
    Example:
      resadapt-eval rescore results/charades_sta/MODEL/vanilla/b1-f32 --task-option parser=robust
    """
    from resadapt_eval.analysis.rescore import rescore as run_rescore

    done = run_rescore(run_dir, _parse_options(task_option), label=label, overwrite=overwrite)
    click.echo("\n".join(done.lines()))


def _print_check(result) -> None:
    from tabulate import tabulate

    click.echo(f"\nrun:       {result.run}\nbaseline:  {result.reference}")
    click.echo(tabulate(result.rows, headers=["", "baseline", "run", "change"], tablefmt="simple"))
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.passed:
        click.echo("PASS")
    for failure in result.failures:
        click.echo(f"FAIL: {failure}")


@main.command(name="train-allocator")
@click.option("--task", "tasks", multiple=True, default=("probe-videoqa", "probe-longvideo"), show_default=True,
              help="Probe task to train on (repeatable; prompts alternate between tasks).")
@click.option("--backbone", default="tiny-bundled", show_default=True, help="The frozen backbone (alias or folder).")
@click.option("--out", required=True, help="Folder for allocator.safetensors, its config, history and curves.")
@click.option("--steps", type=int, default=600, show_default=True, help="Training prompts.")
@click.option("--group", type=int, default=8, show_default=True, help="Allocations sampled per prompt (M).")
@click.option("--mode", type=click.Choice(["budget", "free"]), default="budget", show_default=True,
              help="budget: project each allocation onto a training budget as evaluation does; free: scales as sampled.")
@click.option("--budgets", default="0.1,0.25", show_default=True, help="Training budgets, one drawn per prompt.")
@click.option("--frames", type=int, default=None, help="Frames per video (default: each task card's).")
@click.option("--drop", default="none", show_default=True,
              help="Chunk dropping during rollouts, as the strategy option: none, topk:K or threshold:X.")
@click.option("--task-budgets", multiple=True, metavar="TASK=B1,B2",
              help="Training budgets for one task, overriding --budgets (repeatable).")
@click.option("--task-drop", multiple=True, metavar="TASK=MODE", help="Chunk dropping for one task, overriding --drop.")
@click.option("--task-mode", multiple=True, metavar="TASK=MODE",
              help="budget or free for one task, overriding --mode (free: the allocator learns how much to spend, "
                   "and evaluation then uses the budget as a ceiling).")
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--train-samples", type=int, default=400, show_default=True, help="Training prompts built per task.")
@click.option("--thumb-scale", type=click.FloatRange(0.05, 1.0), default=0.5, show_default=True,
              help="Side of the thumbnails the allocator looks at, as a share of the vanilla side (its cost).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--time-limit", type=float, default=None, help="Stop after this many seconds (saves what it has).")
@click.option("--warm-start", multiple=True, metavar="TASK=N",
              help="Before CAPO, fit a free-mode task's head to the oracle scale (the smallest at which the "
                   "backbone still answers right) of N training prompts.")
@click.option("--task-weight", multiple=True, metavar="TASK=W",
              help="Relative share of the CAPO prompts for one task (default 1 each; 0: warm start only).")
@click.option("--no-progress", is_flag=True, help="Log every 25 prompts instead of a progress bar.")
def train_allocator(tasks, backbone, out, steps, group, mode, budgets, frames, drop, task_budgets, task_drop,
                    task_mode, lr, train_samples, thumb_scale, seed, time_limit, warm_start, task_weight,
                    no_progress) -> None:
    """Train a resadapt-budget allocator (the exact-budget chunk selector) with CAPO over a frozen
    backbone on probe training splits. For the published method's allocator, see train-resadapt."""
    from resadapt_eval.training.allocator import TrainConfig, train
    from resadapt_eval.strategies.resadapt_budget import parse_drop

    def per_task(values, flag):
        return _per_task(values, flag, tasks)

    def fractions(text, flag):
        try:
            return [float(b) for b in _split(text)]
        except ValueError:
            raise UserError(f"{flag} wants comma-separated fractions, got {text!r}") from None

    per_budgets = {t: fractions(v, "--task-budgets") for t, v in per_task(task_budgets, "--task-budgets").items()}
    per_drop = per_task(task_drop, "--task-drop")
    for value in [drop, *per_drop.values()]:
        parse_drop(value)
    per_mode = per_task(task_mode, "--task-mode")
    for value in per_mode.values():
        if value not in ("budget", "free"):
            raise UserError(f"--task-mode wants TASK=budget or TASK=free, got {value!r}")
    warm = {}
    for task, value in per_task(warm_start, "--warm-start").items():
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"--warm-start wants TASK=N with N a positive count of prompts, got {value!r}")
        if per_mode.get(task, mode) != "free":
            raise UserError(f"--warm-start {task}: the oracle warm start is for free-mode tasks; add --task-mode {task}=free")
        warm[task] = int(value)
    weights = _task_weights(per_task(task_weight, "--task-weight"), tasks)
    config = TrainConfig(tasks=list(tasks), backbone=backbone, steps=steps, group=group, mode=mode,
                         budgets=fractions(budgets, "--budgets"), frames=frames, drop=drop, task_budgets=per_budgets,
                         task_drop=per_drop, task_mode=per_mode, lr=lr, train_samples=train_samples, thumb_scale=thumb_scale, seed=seed,
                         time_limit_s=time_limit, warm_start=warm, task_weights=weights)
    meta = train(config, out, progress=not no_progress, log=click.echo)
    click.echo(f"{meta['trained']['prompts']} prompts in {meta['trained']['seconds']} s; allocator in {out}")


def _per_task(values, flag: str, tasks) -> dict[str, str]:
    """TASK=VALUE options -> {task: value}, each task one of --task, or a one-line error."""
    out = {}
    for item in values:
        task, sep, value = item.partition("=")
        if not sep or task not in tasks:
            raise UserError(f"{flag} wants TASK=VALUE with TASK one of --task ({', '.join(tasks)}), got {item!r}")
        out[task] = value
    return out


def _nonnegative(values: dict[str, str], flag: str, letter: str) -> dict[str, float]:
    """{task: text} from TASK=X options -> {task: X} with X a number >= 0, or a one-line error."""
    out = {}
    for task, value in values.items():
        try:
            out[task] = float(value)
        except ValueError:
            out[task] = float("nan")
        if not out[task] >= 0:
            raise UserError(f"{flag} wants TASK={letter} with {letter} a number >= 0, got {value!r}")
    return out


def _task_weights(values: dict[str, str], tasks) -> dict[str, float]:
    """--task-weight TASK=W values -> weights, or a one-line error."""
    weights = _nonnegative(values, "--task-weight", "W")
    if weights and sum(weights.get(t, 1.0) for t in tasks) <= 0:
        raise UserError("--task-weight: at least one task needs a positive weight")
    return weights


@main.command(name="train-resadapt")
@click.option("--task", "tasks", multiple=True, default=("probe-longvideo", "probe-which"), show_default=True,
              help="Probe task to train on (repeatable; prompts alternate between tasks).")
@click.option("--backbone", default="tiny-bundled", show_default=True,
              help="The frozen backbone that answers the rollouts (alias or folder).")
@click.option("--encoder", default="tiny-encoder", show_default=True,
              help="The allocator's own frozen small vision-language model (alias or folder): it looks at the frames "
                   "and the question; the trained allocator then plans for any backbone.")
@click.option("--encoder-side", type=click.IntRange(28, 1024), default=112, show_default=True,
              help="Frames are resized to this square for the encoder.")
@click.option("--out", required=True, help="Folder for allocator.safetensors, its config, history and curves.")
@click.option("--steps", type=click.IntRange(1), default=600, show_default=True, help="Training prompts.")
@click.option("--group", type=click.IntRange(2), default=8, show_default=True,
              help="Allocations sampled per prompt (the original's scale_n).")
@click.option("--answers", type=click.IntRange(1), default=2, show_default=True,
              help="Answers sampled per allocation at --temperature (the original's rollout.n).")
@click.option("--temperature", type=click.FloatRange(0.05), default=1.0, show_default=True)
@click.option("--cost", type=click.Choice(["retention", "linear-scale"]), default="retention", show_default=True,
              help="CAPO's cost: the visual tokens actually spent over vanilla's, or the paper's linear mean scale.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-prompts", type=click.IntRange(1), default=1, show_default=True,
              help="Prompts per optimizer step: their losses are averaged first (the original: 32).")
@click.option("--init-logit", type=float, default=-10.0, show_default=True,
              help="The head's start, alpha = beta = softplus(LOGIT) + 1; -10 (the original's) is uniform, "
                   "and its gradient is tiny there.")
@click.option("--init-scale", type=float, default=None,
              help="The start's mean scale per side (default: the middle of the range, as the original).")
@click.option("--pivot-center", type=click.FloatRange(0, 1), default=0.4, show_default=True,
              help="CAPO's pivot centre c0 in the paper's linear-scale unit (0.4: a mean scale of 0.92).")
@click.option("--concentration-weight", type=click.FloatRange(0), default=5e-4, show_default=True,
              help="Weight of the concentration loss mean(alpha + beta) (the original's `ccen`).")
@click.option("--cost-penalty", type=click.FloatRange(0), default=0.05, show_default=True,
              help="lambda_gas, CAPO's plain cost penalty on every allocation (the original's 0.05).")
@click.option("--no-clamp", is_flag=True,
              help="Let a correct answer's advantage go negative (the original's `noclamp` tag), so cost "
                   "pressure acts at any cost level.")
@click.option("--standardize", is_flag=True,
              help="Standardise the encoder's features with statistics of the training prompts (stored with the "
                   "head); not in the original, needed by a small head on few prompts (docs/strategies.md).")
@click.option("--token-relevance", is_flag=True,
              help="Add a sixth per-frame signal, the best token-question relevance (not in the original).")
@click.option("--train-samples", type=click.IntRange(1), default=400, show_default=True,
              help="Training prompts generated per task.")
@click.option("--task-weight", multiple=True, metavar="TASK=W",
              help="Relative share of the prompts for one task (default 1 each).")
@click.option("--task-cost-penalty", multiple=True, metavar="TASK=X",
              help="lambda_gas for one task's prompts (default --cost-penalty).")
@click.option("--init-from", default=None, metavar="FOLDER",
              help="Continue from this allocator (an earlier stage of a curriculum): its weights and "
                   "standardisation; the head's shape options must match it, and --init-logit/--init-scale "
                   "are then unused.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--time-limit", type=float, default=None, help="Stop after this many seconds (saves what it has).")
@click.option("--no-progress", is_flag=True, help="Log every 25 prompts instead of a progress bar.")
def train_resadapt(tasks, backbone, encoder, encoder_side, out, steps, group, answers, temperature, cost, lr,
                   batch_prompts, init_logit, init_scale, pivot_center, concentration_weight, cost_penalty, no_clamp,
                   standardize, token_relevance, train_samples, task_weight, task_cost_penalty, init_from, seed,
                   time_limit, no_progress) -> None:
    """Train the `resadapt` allocator (the published method: per-frame scales in [0.2, 2.0] from a
    question-aware policy with its own encoder) with CAPO in free mode over a frozen backbone."""
    from resadapt_eval.training.resadapt import ResAdaptTrainConfig, train

    per = _per_task(task_weight, "--task-weight", tasks)
    penalties = _nonnegative(_per_task(task_cost_penalty, "--task-cost-penalty", tasks), "--task-cost-penalty", "X")
    config = ResAdaptTrainConfig(tasks=list(tasks), backbone=backbone, encoder=encoder, encoder_side=encoder_side,
                                 steps=steps, group=group, answers=answers, temperature=temperature, cost=cost, lr=lr,
                                 batch_prompts=batch_prompts, init_logit=init_logit, init_scale=init_scale,
                                 pivot_c0=pivot_center, clamp_correct=not no_clamp,
                                 concentration_weight=concentration_weight, cost_penalty=cost_penalty,
                                 standardize=standardize, token_relevance=token_relevance,
                                 train_samples=train_samples, task_weights=_task_weights(per, tasks),
                                 task_cost_penalties=penalties, init_from=init_from,
                                 seed=seed, time_limit_s=time_limit)
    meta = train(config, out, progress=not no_progress, log=click.echo)
    click.echo(f"{meta['trained']['prompts']} prompts in {meta['trained']['seconds']} s; allocator in {out}")


@main.command(name="list")
@click.argument("what", type=click.Choice(["tasks", "strategies", "backbones"]))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_(what: str, as_json: bool) -> None:
    """Print the registered task, strategy or backbone names (tasks: with the card each comes from).

    \b
    Task cards are found, first match wins, in each folder of $RESADAPT_TASKS_PATH (os.pathsep-
    separated), then in the bundled cards ($RESADAPT_TASKS_DIR replaces those); `--task` also takes
    a card file, path/to/card.yaml."""
    if what == "tasks":
        from resadapt_eval.adapters.base import card_sources
        sources = card_sources().values()
        if as_json:
            click.echo(json.dumps([{"name": c.name, "path": str(c.path), "origin": c.origin} for c in sources]))
        else:
            width = max((len(c.name) for c in sources), default=0)
            click.echo("\n".join(f"{c.name:<{width}}  {c.path}  ({c.origin})" for c in sources))
        return
    elif what == "strategies":
        from resadapt_eval.strategies import STRATEGIES
        names = STRATEGIES.names()
    else:
        from resadapt_eval.backbones import backbone_names
        names = backbone_names()
    click.echo(json.dumps(names) if as_json else "\n".join(names))


def _parse_options(items: tuple[str, ...], flag: str = "--task-option") -> dict:
    """KEY=VALUE pairs, values read as YAML (so 3, true and [a, b] keep their types)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _check_positive(kw: dict, *names: str) -> None:
    for name in names:
        if kw.get(name) is not None and kw[name] < 1:
            flag = "budget-at-frames" if name == "budget_ref_frames" else name.replace("_", "-")
            raise UserError(f"--{flag} must be at least 1, got {kw[name]}")


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
