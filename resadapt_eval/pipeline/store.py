"""The results store: one run directory's lock, manifest, resume, shards, merge and summary.

results/<task>/<backbone>/<strategy>/b<budget>-f<frames>/
    samples.jsonl   one record per sample, appended and flushed as it completes
    summary.json    metrics with bootstrap 95% CIs, breakdowns, mean retention and costs, error counts
    manifest.json   full config and its hash, versions, git revision, checksums, seed, device

The types of these files (Record, Summary, Manifest) are in `resadapt_eval.core.record`; this module
is the one place that reads and writes them. `RunStore` is what the runner uses for one run.
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
from typing import Any, Callable, Iterator

import numpy as np

from resadapt_eval.core.record import Manifest, Record, Summary, split_known
from resadapt_eval.core.types import DiskFull, UserError
from resadapt_eval.pipeline.distributed import World

SAMPLES, SUMMARY, MANIFEST, LOCK = "samples.jsonl", "summary.json", "manifest.json", ".lock"
SHARD_GLOB = "samples.rank*-of-*.jsonl"
# Bootstrap resamples, for the summaries' CIs and check's paired test alike. 1,000 keeps the committed
# summaries' CIs as they are and a summary of a full benchmark quick (Charades-STA: 3,720 samples x 10
# metrics); 10,000 moved the committed CIs by up to 0.5 points and made each metric's CI ~7.5x slower.
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


def load_records(path: Path) -> list[Record]:
    """All complete records of a samples file as typed Records (files of any schema version)."""
    return [Record.from_dict(r) for r in read_records(path)]


def load_summary(directory: Path) -> Summary:
    return Summary.from_dict(read_json(Path(directory) / SUMMARY))


def load_manifest(directory: Path) -> Manifest:
    return Manifest.from_dict(read_json(Path(directory) / MANIFEST))


def write_records(path: Path, records: list[Record]) -> None:
    """Write a whole samples file atomically (temp file + fsync + rename)."""
    tmp = path.with_name(path.name + ".writing")
    with disk_full_as_error(path), open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), default=json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_path(directory: Path, rank: int, size: int) -> Path:
    """Where one rank of a data-parallel run appends its records."""
    return directory / f"samples.rank{rank}-of-{size}.jsonl"


def shard_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(SHARD_GLOB))


def merge_shards(directory: Path, order: list[str]) -> list[Record]:
    """Fold every shard file into samples.jsonl, each id once, in the task's sample order, then
    remove the shards. The merged file replaces the old one atomically, so a crash here loses
    nothing: shards left behind are merged again (their ids already present are skipped)."""
    main = directory / SAMPLES
    records = [Record.from_dict(r) for r in read_records(main, repair=True)]
    shards = shard_files(directory)
    if not shards:
        return records
    seen = {r.id for r in records}
    for shard in shards:
        for r in read_records(shard, repair=True):
            if r["id"] not in seen:
                records.append(Record.from_dict(r))
                seen.add(r["id"])
    position = {sid: i for i, sid in enumerate(order)}
    records.sort(key=lambda r: position.get(r.id, len(position)))  # ids of a wider earlier run last
    write_records(main, records)
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

    def write(self, record: Record | dict[str, Any]) -> None:
        data = record.to_dict() if isinstance(record, Record) else record
        line = json.dumps(data, default=json_default) + "\n"
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


def json_default(value: Any) -> Any:
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
    text = json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n"
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


def _metric_block(records: list[Record], metrics: tuple[str, ...], seed: int) -> dict[str, Any]:
    out = {}
    for m in metrics:
        vals = np.array([r.score[m] for r in records if r.score and m in r.score], dtype=float)
        lo, hi = bootstrap_ci(vals, seed)
        out[m] = {"value": float(vals.mean() * 100) if len(vals) else float("nan"),
                  "ci_low": lo * 100, "ci_high": hi * 100, "n": int(len(vals))}
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(records: list[Record], head: dict[str, Any], metrics: tuple[str, ...], main_metric: str,
              breakdown_keys: tuple[str, ...], seed: int) -> Summary:
    """The summary of a run: metrics (mean x 100 over scored samples) with CIs, costs and breakdowns.

    Error records (missing or corrupt media) are counted in `n_errors` and left out of the metrics.
    """
    records = sorted(records, key=lambda r: r.id)
    ok = [r for r in records if r.ok]
    breakdowns: dict[str, Any] = {}
    for key in breakdown_keys:
        groups: dict[str, list[Record]] = {}
        for r in ok:
            value = r.meta.get(key)
            for v in (value if isinstance(value, (list, tuple)) else [value]):  # e.g. MathVista skills
                if v is not None:
                    groups.setdefault(str(v), []).append(r)
        breakdowns[key] = {v: {m: {"value": float(np.mean([g.score[m] for g in rs]) * 100), "n": len(rs)}
                               for m in metrics} for v, rs in sorted(groups.items())}
    timing_keys = sorted({k for r in ok for k in r.timings})
    known, extra = split_known(Summary, head)
    shares = [r.extra.get("window_share") for r in ok]
    if any(s is not None for s in shares):  # temporal grounding: the share of tokens inside the GT window
        extra["window_share_mean"] = _mean(shares)
    return Summary(
        **known,
        n=len(records),
        n_scored=len(ok),
        n_errors=len(records) - len(ok),
        n_infeasible=sum(1 for r in ok if not r.feasible),
        main_metric=main_metric,
        metrics=_metric_block(ok, metrics, seed),
        retention_mean=_mean([r.retention for r in ok]),
        tokens_mean=_mean([r.tokens for r in ok]),
        llm_visual_tokens_mean=_mean([r.llm_visual_tokens for r in ok]),
        vanilla_tokens_mean=_mean([r.vanilla_tokens for r in ok]),
        patches_mean=_mean([r.patches for r in ok]),
        flops_mean=_mean([r.flops["total"] for r in ok]),
        flops_planner_mean=_mean([r.flops.get("planner", 0.0) for r in ok]),
        timings_mean={k: _mean([r.timings.get(k) for r in ok]) for k in timing_keys},
        breakdowns=breakdowns,
        errors=sorted({r.error for r in records if r.error})[:20],
        extra=extra,
    )


class RunStore:
    """One run directory as a run sees it: the lock, the manifest (and the refusal of a different
    config), resume, this rank's shard, the merge and the summary.

    Under torchrun every rank opens the same directory: rank 0 owns the manifest, the merge and the
    summary; the other ranks lock and append to their own shard file (see pipeline.distributed).

        store = RunStore(directory, world)
        with store.open(manifest):
            done = store.done_ids()
            with store.writer() as write: ...
            summary = store.finish(order, summarize_fn)
    """

    def __init__(self, directory: Path, world: World | None = None):
        self.directory = Path(directory)
        self.world = world or World()

    @property
    def samples_path(self) -> Path:
        return self.directory / SAMPLES

    @property
    def own_path(self) -> Path:
        """Where this process appends: samples.jsonl alone, a shard file under torchrun."""
        w = self.world
        return self.samples_path if w.size == 1 else shard_path(self.directory, w.rank, w.size)

    @contextmanager
    def open(self, manifest: Manifest) -> Iterator["RunStore"]:
        """Lock the directory, write the manifest if it is new (rank 0) and refuse a directory that
        holds another configuration's results."""
        w = self.world
        with locked(self.directory, LOCK if w.is_main else f"{LOCK}.rank{w.rank}"):
            path = self.directory / MANIFEST
            if w.is_main and not path.exists():
                write_json(path, manifest.to_dict())
            w.barrier()
            old = read_json(path).get("config_hash")
            if old != manifest.config_hash:
                raise UserError(f"{self.directory} holds results of a different config (hash {old}, now "
                                f"{manifest.config_hash}); pass another --out or remove that directory")
            yield self

    def done_ids(self) -> set[str]:
        """Ids already recorded here (any rank's shard included); this process's own file is repaired
        (a torn last line from a killed run cut off) before it appends."""
        own = self.own_path
        return {r["id"] for path in [self.samples_path, *shard_files(self.directory)]
                for r in read_records(path, repair=path == own)}

    @contextmanager
    def writer(self) -> Iterator[Callable[[Record | dict[str, Any]], None]]:
        """Append records to this process's file, each flushed and fsynced as it is written."""
        writer = RecordWriter(self.own_path)
        try:
            yield writer.write
        finally:
            writer.close()

    def finish(self, order: list[str], summarize_fn: Callable[[list[Record]], Summary]) -> dict[str, Any]:
        """Merge the shards (rank 0), summarise the records of the ids in `order` and write the summary;
        every rank returns it."""
        w = self.world
        w.barrier()
        if w.is_main:
            wanted = set(order)
            records = [r for r in merge_shards(self.directory, order) if r.id in wanted]
            summary = summarize_fn(records).to_dict()
            write_json(self.directory / SUMMARY, summary)
        w.barrier()
        if not w.is_main:
            summary = read_json(self.directory / SUMMARY)
        return summary


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
