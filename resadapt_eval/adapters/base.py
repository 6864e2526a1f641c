"""Task cards and the adapter protocol (dataset + scorer, as in Inspect AI's split)."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import yaml

from resadapt_eval.core.registry import TASK_CARDS_GROUP, load_entry_point, plugin_entry_points
from resadapt_eval.core.types import Sample, UserError

TASKS_DIR_ENV = "RESADAPT_TASKS_DIR"    # one folder that replaces the bundled cards (tests, forks)
TASKS_PATH_ENV = "RESADAPT_TASKS_PATH"  # folders of the user's own cards, searched before the bundled ones
CARD_SUFFIXES = (".yaml", ".yml")

# Keys every card may hold, whatever its adapter; an adapter adds the ones it reads (`card_keys`).
COMMON_CARD_KEYS = ("adapter", "data_root", "frames", "max_new_tokens", "missing_hint", "probe", "annotations",
                    "protocol", "split")  # split: a probe card's dev or test split
JUDGE_KEY = "judge_url"


def bundled_tasks_dir() -> Path:
    """The cards that ship with the package: `resadapt_eval/tasks/` in an installed wheel (setup.py
    copies them there), else `tasks/` at the top of a source checkout (editable install)."""
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "tasks"
    return packaged if packaged.is_dir() else here.parents[2] / "tasks"


def tasks_dir() -> Path:
    """Where the bundled task cards live: $RESADAPT_TASKS_DIR, else the package's own cards."""
    env = os.environ.get(TASKS_DIR_ENV)
    return Path(env) if env else bundled_tasks_dir()


@dataclass(frozen=True)
class CardSource:
    """Where one task card comes from: its file and which part of the search path holds it."""

    name: str
    path: Path
    origin: str   # "file", "$RESADAPT_TASKS_PATH", "$RESADAPT_TASKS_DIR", "bundled" or "plugin <name>"


def card_search_path() -> list[tuple[Path, str]]:
    """The folders searched for a task name, first match wins: each folder of $RESADAPT_TASKS_PATH
    (os.pathsep-separated, like PATH), then $RESADAPT_TASKS_DIR or the bundled cards, then the card
    folders of installed plugins."""
    folders = [(Path(os.path.expanduser(p)), f"${TASKS_PATH_ENV}")
               for p in os.environ.get(TASKS_PATH_ENV, "").split(os.pathsep) if p.strip()]
    folders.append((tasks_dir(), f"${TASKS_DIR_ENV}" if os.environ.get(TASKS_DIR_ENV) else "bundled"))
    folders += plugin_card_folders()
    return folders


def plugin_card_folders() -> list[tuple[Path, str]]:
    """Card folders of installed packages: each entry point of the `resadapt_eval.tasks` group names a
    package (or module) whose folder holds YAML cards, or a path; searched after the bundled cards."""
    folders = []
    for ep in plugin_entry_points(TASK_CARDS_GROUP):
        obj = load_entry_point(ep)
        path = Path(getattr(obj, "__file__", None) or obj)
        folders.append((path.parent if path.is_file() else path, f"plugin {ep.name}"))
    return folders


def card_sources() -> dict[str, CardSource]:
    """Every task name on the search path and the card that answers to it (earlier folders win)."""
    found: dict[str, CardSource] = {}
    for folder, origin in card_search_path():
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix in CARD_SUFFIXES and path.is_file():
                found.setdefault(path.stem, CardSource(path.stem, path.resolve(), origin))
    return dict(sorted(found.items()))


def task_names() -> list[str]:
    return list(card_sources())


def is_card_path(task: str) -> bool:
    """`--task` names a card file (path/to/card.yaml) rather than a task on the search path."""
    return task.endswith(CARD_SUFFIXES) or os.sep in task or "/" in task


def find_card(task: str) -> CardSource:
    """The card a `--task` value means: a card file by path, or a name on the search path."""
    if is_card_path(task):
        path = Path(os.path.expanduser(task))
        if not path.is_file():
            raise UserError(f"task card file {task} not found; pass an existing .yaml card or a task name "
                            f"(`resadapt-eval list tasks`)")
        return CardSource(path.stem, path.resolve(), "file")
    sources = card_sources()
    if task not in sources:
        raise UserError(f"unknown task {task!r}; known: {', '.join(sources) or 'none'} (or pass a card file, "
                        f"--task path/to/card.yaml, or add its folder to ${TASKS_PATH_ENV})")
    return sources[task]


def accepted_card_keys(adapter: str) -> tuple[str, ...] | None:
    """The keys a card of this adapter may set (common ones plus the adapter's `card_keys`), or None
    when the adapter does not declare them (a plugin from another package: nothing is checked)."""
    from resadapt_eval.adapters import ADAPTERS

    own = getattr(ADAPTERS.get(adapter), "card_keys", None)
    return None if own is None else tuple(sorted({*COMMON_CARD_KEYS, *own}))


def check_card_keys(task: str, adapter: str, card_keys: list[str], overrides: list[str], where: str) -> None:
    """Refuse keys nobody reads (a misspelt option would be hashed and silently ignored)."""
    accepted = accepted_card_keys(adapter)
    if accepted is None:
        return
    if JUDGE_KEY in overrides and JUDGE_KEY not in accepted:
        raise UserError(f"--judge-url: task {task!r} (adapter {adapter}) has no judge; only tasks whose "
                        f"adapter reads {JUDGE_KEY} take one (e.g. mathvista)")
    bad = sorted(k for k in overrides if k not in accepted)
    if bad:
        raise UserError(f"--task-option {', '.join(bad)}: task {task!r} (adapter {adapter}) has no such option; "
                        f"accepted: {', '.join(k for k in accepted if k not in ('adapter', 'data_root'))}")
    bad = sorted(k for k in card_keys if k not in accepted)
    if bad:
        raise UserError(f"task card {where}: unknown key(s) {', '.join(bad)} for adapter {adapter}; "
                        f"accepted: {', '.join(accepted)}")


def _expand(value: str) -> str:
    os.environ.setdefault("HF_HOME", os.path.expanduser("~/.cache/huggingface"))
    os.environ.setdefault("RESADAPT_HOME", os.path.expanduser("~/.cache/resadapt-eval"))
    return os.path.expanduser(os.path.expandvars(value))


def resolve_split(task: str, spec: dict[str, Any] | None, split: str | None) -> tuple[dict[str, Any], str]:
    """A probe card's recipe for one split: `probe: {n, splits: {dev: SEED, test: SEED}, split: DEFAULT}`
    becomes `{n, seed, split}`; the second value names the split's folder under the card's data root.

    `dev` is the split development looks at (recipes, probe versions, allocator settings); `test` is
    held out and is what the demo, the docs' findings and the committed baseline runs report.
    """
    splits = (spec or {}).get("splits")
    if not splits:
        raise UserError(f"task {task!r} has no dev/test splits (only generated probe tasks do); "
                        "drop the split option for it")
    chosen = str(split or spec.get("split") or "test")
    if chosen not in splits:
        raise UserError(f"task {task!r} has no split {chosen!r}; choose one of {', '.join(splits)} "
                        "(--task-option split=NAME)")
    recipe = {k: v for k, v in spec.items() if k not in ("splits", "split")}
    return {**recipe, "seed": int(splits[chosen]), "split": chosen}, chosen


@dataclass(frozen=True)
class TaskCard:
    """One task's settings, read from `tasks/<name>.yaml` (data root may be overridden).

    Loading a card reads it and nothing else: generated (probe) data is provisioned by an explicit
    step (`resadapt_eval.probes.provision`, which the runner calls), never as a side effect here.
    """

    name: str
    adapter: str
    data_root: Path
    frames: int
    max_new_tokens: int
    options: dict[str, Any] = field(default_factory=dict)
    missing_hint: str = ""
    root_given: bool = False  # the user named the data root (--data-root): never generate data there
    protocol: str = "fixed"   # the reference protocol the card's defaults follow (core/protocol.py)

    @property
    def split(self) -> str | None:
        """Which split of a generated task this card reads (`dev` or `test`), or None."""
        return (self.probe or {}).get("split")

    @property
    def probe(self) -> dict[str, Any] | None:
        """A generated task's recipe (`probe:` in the card: seed, n), or None for a real benchmark."""
        return self.options.get("probe") or None

    @classmethod
    def load(cls, name: str, data_root: str | None = None, overrides: dict[str, Any] | None = None) -> "TaskCard":
        """`name` is a task on the search path or a card file (`path/to/card.yaml`; its stem names the task)."""
        source = find_card(name)
        name, path = source.name, source.path
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"task card {path} is not valid YAML ({str(e).splitlines()[0]})") from None
        raw = raw or {}
        if not isinstance(raw, dict) or not isinstance(raw.get("adapter"), str):
            raise UserError(f"task card {path} must be a mapping with an `adapter:` (one of "
                            f"`resadapt-eval list tasks`' cards shows the form)")
        for key in overrides or {}:
            if key in ("adapter", "data_root"):
                raise UserError(f"--task-option {key} is not allowed; use --data-root for the data location")
        check_card_keys(name, raw["adapter"], list(raw), list(overrides or {}), str(path))
        raw.update(overrides or {})
        if raw.get("judge_url"):
            refuse_credentials(str(raw["judge_url"]))
        root = Path(_expand(data_root or raw.pop("data_root", ".")))
        raw.pop("data_root", None)
        if "split" in raw or (raw.get("probe") or {}).get("splits"):
            raw["probe"], split_dir = resolve_split(name, raw.get("probe"), raw.pop("split", None))
            if data_root is None:  # each split in its own folder under the card's root
                root = root / split_dir
        return cls(name=name, adapter=raw.pop("adapter"), data_root=root, frames=int(raw.pop("frames", 32)),
                   max_new_tokens=int(raw.pop("max_new_tokens", 16)), missing_hint=raw.pop("missing_hint", ""),
                   protocol=str(raw.pop("protocol", "fixed")), options=raw, root_given=data_root is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": self.adapter, "data_root": str(self.data_root), "frames": self.frames,
                "max_new_tokens": self.max_new_tokens, "options": self.options}

    def find(self, pattern: str, what: str) -> list[Path]:
        """Files under the data root matching `pattern`; a clear error naming where to put them if none."""
        hits = sorted(Path(p) for p in glob.glob(str(self.data_root / pattern)))
        if not hits:
            hint = f" {self.missing_hint}" if self.missing_hint else ""
            raise UserError(f"{self.name}: no {what} at {self.data_root / pattern}; put the data there or pass "
                            f"--data-root.{hint}")
        return hits

    def read_parquet(self, default_pattern: str, what: str):
        """All rows of the parquet files matching the card's `annotations` (or the default), as one frame."""
        import pandas as pd

        files = self.find(self.options.get("annotations", default_pattern), what)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def safe_path(self, relative: str) -> Path:
        """A media path from an annotation row, refused (ValueError) if it escapes the data root.

        The check is on the path as written: `..` parts and absolute paths that lead outside the root
        are refused. Symlinks the user put inside the root (e.g. `data -> /mnt/big/videos`) are
        followed: they are the user's own choice of where the data lies, not the annotation's.
        """
        root = Path(os.path.abspath(self.data_root))
        text = str(relative)
        if "\x00" in text:
            raise ValueError(f"path {relative!r} escapes the data root (NUL byte)")
        path = Path(os.path.normpath(root / text))
        if root != path and root not in path.parents:
            raise ValueError(f"path {relative!r} escapes the data root")
        return path


_SECRET_QUERY = re.compile(r"(?:^|_|-)(?:key|apikey|token|secret|password|auth|sig|signature)$", re.IGNORECASE)


def refuse_credentials(url: str) -> None:
    """A judge URL must not carry a key (`https://user:KEY@host`, `?api_key=...`): the URL is part of
    the recorded configuration, the key is read from the environment only and never recorded. The
    message does not repeat the URL."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UserError("--judge-url must not carry credentials (user:KEY@host); put the key in the environment "
                        "variable named by judge_key_env (default OPENAI_API_KEY), which is never recorded")
    secret = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_QUERY.search(k)]
    if secret:
        raise UserError(f"--judge-url must not carry credentials (query parameter {secret[0]!r}); put the key in "
                        f"the environment variable named by judge_key_env (default OPENAI_API_KEY), which is never "
                        f"recorded")


def row_error(sample_id: str, media_kind: str, cause: str, **meta: Any) -> Sample:
    """A Sample for an annotation row that cannot be read: the runner turns it into an error record
    (id and cause), and the other rows run on."""
    return Sample(id=sample_id, prompt="", media_kind=media_kind, media=None, target=None,  # type: ignore[arg-type]
                  meta={**meta, "media_error": cause})


def row_cause(e: Exception) -> str:
    """What is wrong with a row, in a few words, from the exception reading it raised."""
    if isinstance(e, KeyError):
        return f"missing field {e.args[0]!r}" if e.args else "missing field"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


ROW_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def sample_or_error(build: Callable[[], Sample], index: int, row: Any, media_kind: str, id_field: str | None = None,
                    fallback_id: str | None = None) -> Sample:
    """`build()`'s Sample, or, for a malformed row, one error record: its id is the row's `id_field`
    when that is a plain string or number, else `fallback_id`, else `row<index>`."""
    try:
        return build()
    except ROW_ERRORS as e:  # a malformed row is one error record, not a failed load
        rid = row.get(id_field) if id_field and isinstance(row, dict) else None
        ok = isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid)
        sid = str(rid) if ok else (fallback_id or f"row{index}")
        return row_error(sid, media_kind, f"annotation row {index} is malformed: {row_cause(e)}", row=index)


def plain(value: Any) -> Any:
    """numpy scalars/arrays and nested structs from a parquet row as plain Python values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value.tolist()] if getattr(value, "ndim", 0) else value.item()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def evidence_meta(row: dict[str, Any]) -> dict[str, Any]:
    """A generated probe row's `evidence` column (JSON), for the record's meta; empty for real data."""
    return {"evidence": json.loads(row["evidence"])} if row.get("evidence") else {}


class TaskAdapter(Protocol):
    """Reads samples and scores predictions for one benchmark.

    `load` reads the official files and turns each annotation row into a Sample with
    `sample_from_row`, which the reference-model training also uses to build its prompts.
    """

    version: str                  # of its prompt, parse and scoring rules; in the config hash (bump on change)
    metrics: tuple[str, ...]      # per-sample numeric score keys, reported as mean x 100
    main_metric: str
    card_keys: tuple[str, ...]    # card options it reads, beyond COMMON_CARD_KEYS (checked: a typo is an error)
    breakdown_keys: tuple[str, ...]

    def load(self, card: TaskCard) -> list[Sample]: ...

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample: ...

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        """(numeric scores, the parsed answer) for one prediction."""
        ...
