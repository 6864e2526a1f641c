"""The results layout: per-sample records (append-only, crash-safe), the summary and the manifest.

results/<task>/<backbone>/<strategy>/b<budget>-f<frames>/
    samples.jsonl   one record per sample, appended and flushed as it completes
    summary.json    metrics with bootstrap 95% CIs, breakdowns, mean retention and costs, error counts
    manifest.json   full config and its hash, versions, git revision, checksums, seed, device
"""

from __future__ import annotations

import copy
import errno
import fcntl
import functools
import hashlib
import json
import os
import platform
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from resadapt_eval.core.types import DiskFull, UserError

SAMPLES, SUMMARY, MANIFEST, LOCK = "samples.jsonl", "summary.json", "manifest.json", ".lock"
SHARD_GLOB = "samples.rank*-of-*.jsonl"
BOOTSTRAP_RESAMPLES = 1000
PACKAGES = ("resadapt-eval", "torch", "torchvision", "transformers", "accelerate", "decord", "av", "numpy",
            "pandas", "pyarrow", "pillow", "tokenizers", "flash-attn")


def strategy_label(name: str, options: dict[str, Any] | None = None) -> str:
    """The strategy's name in directories, summaries and figures: options are part of it
    (`fastv+layer=1`), so runs that differ only in an option never share a directory. A path
    value is named by its last part and a short digest of its absolute path
    (`resadapt+allocator=mine@1a2b3c4d`): two folders called `mine` get two directories."""
    def short(v: Any) -> Any:
        if not isinstance(v, (str, os.PathLike)):
            return v
        text = os.fspath(v)
        if os.sep not in text and not Path(text).exists():
            return v
        where = os.path.abspath(os.path.expanduser(text))
        return f"{Path(where).name}@{hashlib.sha256(where.encode()).hexdigest()[:8]}"
    return "+".join([name] + [f"{k}={short(v)}" for k, v in sorted((options or {}).items())])


def run_dir(root: str | os.PathLike, task: str, backbone: str, strategy: str, budget_label: str, frames: int) -> Path:
    return Path(root) / task / backbone / strategy / f"b{budget_label}-f{frames}"


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of everything that can change results (not --limit, not the output root)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextmanager
def locked(directory: Path, name: str = LOCK) -> Iterator[None]:
    """Hold an exclusive lock on a run directory (ranks of a data-parallel run other than 0 lock their
    own `name`); a second writer is refused with a clear message."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{directory} is being written by another run (lock held); wait for it or use --out") from None
        yield
    finally:
        os.close(fd)


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """All complete records; a torn last line (a run killed mid-write) is dropped, and cut off if `repair`."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    records = []
    for line in data[:end].splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def shard_path(directory: Path, rank: int, size: int) -> Path:
    """Where one rank of a data-parallel run appends its records."""
    return directory / f"samples.rank{rank}-of-{size}.jsonl"


def shard_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(SHARD_GLOB))


def merge_shards(directory: Path, order: list[str]) -> list[dict[str, Any]]:
    """Fold every shard file into samples.jsonl, each id once, in the task's sample order, then
    remove the shards. The merged file replaces the old one atomically, so a crash here loses
    nothing: shards left behind are merged again (their ids already present are skipped)."""
    main = directory / SAMPLES
    records = read_records(main, repair=True)
    shards = shard_files(directory)
    if not shards:
        return records
    seen = {r["id"] for r in records}
    for shard in shards:
        for r in read_records(shard, repair=True):
            if r["id"] not in seen:
                records.append(r)
                seen.add(r["id"])
    position = {sid: i for i, sid in enumerate(order)}
    records.sort(key=lambda r: position.get(r["id"], len(position)))  # ids of a wider earlier run last
    tmp = main.with_name(main.name + ".merging")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, main)
    for shard in shards:
        shard.unlink()
    return records


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def disk_full_as_error(path: Path) -> Iterator[None]:
    """A full disk (or quota) while writing `path` becomes DiskFull (one line, exit 1), not a traceback."""
    try:
        yield
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise DiskFull(path) from e
        raise


class RecordWriter:
    """Appends one JSON line per record, flushed and fsynced so a crash loses at most the line in flight.

    A full disk raises DiskFull: a half-written last line is repaired when the run resumes
    (`read_records(..., repair=True)`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with disk_full_as_error(self.path):
            self.file = open(path, "a", encoding="utf-8")
        self.failed = False

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_json_default) + "\n"
        try:
            with disk_full_as_error(self.path):
                self.file.write(line)
                self.file.flush()
                os.fsync(self.file.fileno())
        except DiskFull:
            self.failed = True
            raise

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as e:  # the unflushed tail of a write that already failed for lack of space
            if not (self.failed and e.errno in DISK_FULL_ERRNOS):
                raise


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    with disk_full_as_error(path):
        try:
            tmp.write_text(text)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)


def bootstrap_ci(values: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES,
                 block: int = 1 << 18) -> tuple[float, float]:
    """Percentile 95% CI of the mean. Resamples are drawn in blocks of about `block` indices, so
    memory stays flat however many samples a run has; the random stream, and so every CI, is the
    same as drawing all resamples at once (tested)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    step = max(1, block // n)
    means = np.concatenate([values[rng.integers(0, n, size=(min(step, resamples - start), n))].mean(axis=1)
                            for start in range(0, resamples, step)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _metric_block(records: list[dict[str, Any]], metrics: tuple[str, ...], seed: int) -> dict[str, Any]:
    out = {}
    for m in metrics:
        vals = np.array([r["score"][m] for r in records if r["score"] and m in r["score"]], dtype=float)
        lo, hi = bootstrap_ci(vals, seed)
        out[m] = {"value": float(vals.mean() * 100) if len(vals) else float("nan"),
                  "ci_low": lo * 100, "ci_high": hi * 100, "n": int(len(vals))}
    return out


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(records: list[dict[str, Any]], head: dict[str, Any], metrics: tuple[str, ...], main_metric: str,
              breakdown_keys: tuple[str, ...], seed: int) -> dict[str, Any]:
    """The summary of a run: metrics (mean x 100 over scored samples) with CIs, costs and breakdowns.

    Error records (missing or corrupt media) are counted in `n_errors` and left out of the metrics.
    """
    records = sorted(records, key=lambda r: r["id"])
    ok = [r for r in records if not r.get("error")]
    breakdowns: dict[str, Any] = {}
    for key in breakdown_keys:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in ok:
            value = (r.get("meta") or {}).get(key)
            for v in (value if isinstance(value, (list, tuple)) else [value]):  # e.g. MathVista skills
                if v is not None:
                    groups.setdefault(str(v), []).append(r)
        breakdowns[key] = {v: {m: {"value": float(np.mean([g["score"][m] for g in rs]) * 100), "n": len(rs)}
                               for m in metrics} for v, rs in sorted(groups.items())}
    timing_keys = sorted({k for r in ok for k in (r.get("timings") or {})})
    return {
        **head,
        "n": len(records),
        "n_scored": len(ok),
        "n_errors": len(records) - len(ok),
        "n_infeasible": sum(1 for r in ok if not r["plan"]["feasible"]),
        "main_metric": main_metric,
        "metrics": _metric_block(ok, metrics, seed),
        "retention_mean": _mean([r["retention"] for r in ok]),
        "tokens_mean": _mean([r["tokens"] for r in ok]),
        "llm_visual_tokens_mean": _mean([r.get("llm_visual_tokens") for r in ok]),
        "vanilla_tokens_mean": _mean([r["vanilla_tokens"] for r in ok]),
        "patches_mean": _mean([r["patches"] for r in ok]),
        "flops_mean": _mean([r["flops"]["total"] for r in ok]),
        "flops_planner_mean": _mean([r["flops"].get("planner", 0.0) for r in ok]),
        "timings_mean": {k: _mean([(r.get("timings") or {}).get(k) for r in ok]) for k in timing_keys},
        "breakdowns": breakdowns,
        "errors": sorted({r["error"] for r in records if r.get("error")})[:20],
    }


def environment() -> dict[str, Any]:
    """Package versions, git revision and host, for the manifest (looked up once per process: a
    sweep writes many manifests)."""
    return copy.deepcopy(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "git_revision": _git_revision(), "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
