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

from resadapt_eval.core.types import Sample, UserError

TASKS_DIR_ENV = "RESADAPT_TASKS_DIR"


def tasks_dir() -> Path:
    """Where task cards live: $RESADAPT_TASKS_DIR, else `tasks/` beside the package."""
    env = os.environ.get(TASKS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "tasks"


def task_names() -> list[str]:
    return sorted(p.stem for p in tasks_dir().glob("*.yaml"))


def _expand(value: str) -> str:
    os.environ.setdefault("HF_HOME", os.path.expanduser("~/.cache/huggingface"))
    os.environ.setdefault("RESADAPT_HOME", os.path.expanduser("~/.cache/resadapt-eval"))
    return os.path.expanduser(os.path.expandvars(value))


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

    @property
    def probe(self) -> dict[str, Any] | None:
        """A generated task's recipe (`probe:` in the card: seed, n), or None for a real benchmark."""
        return self.options.get("probe") or None

    @classmethod
    def load(cls, name: str, data_root: str | None = None, overrides: dict[str, Any] | None = None) -> "TaskCard":
        path = tasks_dir() / f"{name}.yaml"
        if not path.is_file():
            raise UserError(f"unknown task {name!r}; known: {', '.join(task_names())}")
        raw = yaml.safe_load(path.read_text()) or {}
        for key, value in (overrides or {}).items():
            if key in ("adapter", "data_root"):
                raise UserError(f"--task-option {key} is not allowed; use --data-root for the data location")
            raw[key] = value
        if raw.get("judge_url"):
            refuse_credentials(str(raw["judge_url"]))
        root = Path(_expand(data_root or raw.pop("data_root", ".")))
        raw.pop("data_root", None)
        return cls(name=name, adapter=raw.pop("adapter"), data_root=root, frames=int(raw.pop("frames", 32)),
                   max_new_tokens=int(raw.pop("max_new_tokens", 16)), missing_hint=raw.pop("missing_hint", ""),
                   options=raw, root_given=data_root is not None)

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
    breakdown_keys: tuple[str, ...]

    def load(self, card: TaskCard) -> list[Sample]: ...

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample: ...

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        """(numeric scores, the parsed answer) for one prediction."""
        ...
