"""The results schema: one per-sample Record, a run's Summary and its Manifest, versioned.

These are the types of what a run writes (`samples.jsonl`, `summary.json`, `manifest.json`); the
results store (`resadapt_eval.pipeline.store`) is the one place that reads and writes them. The JSON
keeps the field names and order it always had, so frontier, check and the notebooks read old and
new files alike; `schema_version` is added at the end.

Versions:
  1  files written before the schema was declared (no `schema_version` field); read as version 1.
  2  `schema_version` written; records, summaries and manifests otherwise as in version 1.

Fields a file has and the type does not name are kept in `extra` and written back unchanged, so a
record passes through a rescore or a merge without losing anything a newer version added.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

SCHEMA_VERSION = 2
UNVERSIONED = 1  # what a file without `schema_version` is


def _split(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the keys the dataclass names, everything else) of a JSON object; a newer schema is refused."""
    version = data.get("schema_version", UNVERSIONED)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"{cls.__name__} has schema_version {version!r}; this resadapt-eval reads up to "
                         f"{SCHEMA_VERSION}: upgrade resadapt-eval")
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    known["schema_version"] = version
    return known, {k: v for k, v in data.items() if k not in names}


OMITTED_WHEN_NONE = ("frame_indices", "frame_times", "chunk_tokens")  # later additions: old files lack them


def split_known(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the keys `cls` names, the others) of a run's head, for building a new record type from it."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _emit(obj: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: getattr(obj, k) for k in keys if not (k in OMITTED_WHEN_NONE and getattr(obj, k) is None)}
    out.update(obj.extra)
    out["schema_version"] = SCHEMA_VERSION
    return out


@dataclass
class Record:
    """One sample's result: the prediction and how it was scored, every cost, the plan and timings.

    What a rescore needs is all here: `prediction` (the raw model output), `target` and `meta` (what
    the task's scorer reads besides the prediction). An error record (media missing or corrupt) has
    `error` set and no prediction, score or costs.
    """

    id: str
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    prediction: str | None = None
    parsed: Any = None
    score: dict[str, float] | None = None
    vanilla_tokens: int | None = None
    tokens: int | None = None
    retention: float | None = None
    llm_visual_tokens: float | None = None
    llm_visual_tokens_input: int | None = None
    limit: int | None = None
    patches: int | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    flops: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    frame_indices: list[int] | None = None     # where the plan sits in the source (for `view`);
    frame_times: list[float] | None = None     # absent (None) in records written before they existed
    chunk_tokens: list[int] | None = None
    frames_decoded: int | None = None
    decoder: str | None = None
    frames_cached: bool = False
    output_reused: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # the keys written, in the order runs always wrote them (an error record has fewer)
    KEYS: ClassVar[tuple[str, ...]] = (
        "id", "target", "meta", "prediction", "parsed", "score", "vanilla_tokens", "tokens", "retention",
        "llm_visual_tokens", "llm_visual_tokens_input", "limit", "patches", "prompt_tokens", "generated_tokens",
        "flops", "plan", "frame_indices", "frame_times", "chunk_tokens", "frames_decoded", "decoder", "frames_cached", "output_reused", "timings", "error")
    ERROR_KEYS: ClassVar[tuple[str, ...]] = (
        "id", "target", "meta", "prediction", "parsed", "score", "vanilla_tokens", "tokens", "retention", "plan",
        "timings", "error")

    @property
    def ok(self) -> bool:
        """A scored (or at least executed) sample, not an error record."""
        return not self.error

    @property
    def feasible(self) -> bool:
        return bool((self.plan or {}).get("feasible", True))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        known, extra = _split(cls, data)
        for key in ("meta", "flops", "timings"):  # written as null by nobody, but be lenient
            if known.get(key) is None:
                known.pop(key, None)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self, self.ERROR_KEYS if self.error else self.KEYS)

    def rescored(self, score: dict[str, float] | None, parsed: Any) -> "Record":
        """This record with a new score and parsed answer (everything else as it was)."""
        return replace(self, score=score, parsed=parsed, extra=dict(self.extra))


@dataclass
class Summary:
    """A run's summary: which configuration (`head`), metrics with bootstrap CIs, mean costs, breakdowns."""

    task: str
    backbone: str
    strategy: str
    budget: str
    frames: int
    config_hash: str
    budget_spec: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    n_scored: int = 0
    n_errors: int = 0
    n_infeasible: int = 0
    main_metric: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    retention_mean: float | None = None
    tokens_mean: float | None = None
    llm_visual_tokens_mean: float | None = None
    vanilla_tokens_mean: float | None = None
    patches_mean: float | None = None
    flops_mean: float | None = None
    flops_planner_mean: float | None = None
    timings_mean: dict[str, float | None] = field(default_factory=dict)
    breakdowns: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = (
        "task", "backbone", "strategy", "budget", "budget_spec", "frames", "config_hash", "n", "n_scored",
        "n_errors", "n_infeasible", "main_metric", "metrics", "retention_mean", "tokens_mean",
        "llm_visual_tokens_mean", "vanilla_tokens_mean", "patches_mean", "flops_mean", "flops_planner_mean",
        "timings_mean", "breakdowns", "errors")

    def main(self) -> dict[str, float]:
        """The main metric's block (value, ci_low, ci_high, n)."""
        return self.metrics.get(self.main_metric, {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Summary":
        known, extra = _split(cls, data)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self, self.KEYS)


@dataclass
class Manifest:
    """What produced a run: the full hashed configuration and its hash, how to rerun it, the environment."""

    task: str
    backbone: str
    strategy: str
    budget: str
    frames: int
    config_hash: str
    budget_spec: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)       # everything hashed
    run_config: dict[str, Any] = field(default_factory=dict)   # the RunConfig that reruns it
    seed: int = 0
    environment: dict[str, Any] = field(default_factory=dict)
    backbone_description: dict[str, Any] = field(default_factory=dict)
    backbone_fingerprint: Any = None
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    HEAD: ClassVar[tuple[str, ...]] = ("task", "backbone", "strategy", "budget", "budget_spec", "frames",
                                       "config_hash")

    @property
    def adapter_version(self) -> str | None:
        """The task scorer's version the run was scored with (None: written before versions were hashed)."""
        return self.config.get("adapter_version")

    @classmethod
    def build(cls, head: dict[str, Any], **fields_: Any) -> "Manifest":
        """A new run's manifest: the run's head (keys this schema does not name, e.g. `protocol`, go
        to `extra`) and the rest."""
        known, extra = split_known(cls, head)
        return cls(**known, **fields_, extra=extra)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        data = dict(data)
        # `backbone` is written twice in the JSON: the head's name, then (later, winning) the description
        # dict. Old manifests have only the description under that key; the name is in config.
        described = data.pop("backbone", None)
        known, extra = _split(cls, data)
        if isinstance(described, dict):
            known["backbone_description"] = described
            known["backbone"] = str(described.get("name") or (known.get("config") or {}).get("backbone", ""))
        else:
            known["backbone"] = str(described or "")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.HEAD}
        out.update(config=self.config, run_config=self.run_config, seed=self.seed, environment=self.environment,
                   backbone=self.backbone_description, backbone_fingerprint=self.backbone_fingerprint,
                   created=self.created)
        out.update(self.extra)
        out["schema_version"] = SCHEMA_VERSION
        return out
