"""A strategy with its options, as one word: `fastv+layer=2`, `resadapt+allocator=PATH+drop=topk:4`.

`run --strategy` and a sweep's `--strategies` list (or `strategies:` in its YAML) take this form, so
a sweep's grid holds whatever `run` can run. Options are checked against the strategy's own
signature (and by building it once) before any model is loaded; a bad one is a one-line error
naming the options the strategy has.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from resadapt_eval.core.types import UserError
from resadapt_eval.pipeline.store import strategy_label
from resadapt_eval.strategies import STRATEGIES

# '+' starts a new option only where `key=` follows, so a value may itself hold a '+' (1e+3, a path).
_OPTION_START = re.compile(r"\+(?=[A-Za-z_][A-Za-z0-9_]*=)")


@dataclass(frozen=True)
class StrategySpec:
    """One strategy of a grid: its registered name and its options (values already typed)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Its name in run directories, summaries and figures (see `records.strategy_label`)."""
        return strategy_label(self.name, self.options)


def split_list(text: str) -> list[str]:
    """Comma-separated items; commas inside brackets or quotes stay (`tome+layers=[1, 2],vanilla`)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [x.strip() for x in items if x.strip()]


def parse_spec(text: str) -> StrategySpec:
    """`name+key=value+...` -> StrategySpec; values are read as YAML (2, true and [a, b] keep their types)."""
    name, *parts = _OPTION_START.split(text.strip())
    name = name.strip()
    if not name or "=" in name:
        raise UserError(f"strategy {text!r} is not NAME or NAME+KEY=VALUE (e.g. fastv+layer=2)")
    options: dict[str, Any] = {}
    for part in parts:
        key, _, value = part.partition("=")
        if key in options:
            raise UserError(f"strategy {text!r} sets option {key} twice")
        options[key] = yaml.safe_load(value)
    return StrategySpec(name, options)


def accepted_options(name: str) -> list[str]:
    """The keyword options the named strategy's constructor takes."""
    cls = STRATEGIES.get(name)
    return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options the strategy accepts (checked by building it once), or a one-line error naming them."""
    accepted = accepted_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = ", ".join(accepted) or "none"
        raise UserError(f"strategy {name!r} has no option {', '.join(unknown)} (its options: {known})")
    STRATEGIES.get(name)(**options)
    return options


def takes_allocator(name: str, allocator: str) -> bool:
    """Whether strategy `name` loads the kind of allocator folder `allocator` is (its class's
    `allocator_kinds`, model types of allocator configs; a strategy that names none takes any), so a
    sweep-wide --allocator goes only to the strategies it was trained for."""
    from resadapt_eval.allocator.model import head_type

    kinds = getattr(STRATEGIES.get(name), "allocator_kinds", None)
    kind = head_type(allocator)
    return kinds is None or not kind or kind in kinds  # an unknown folder: the strategy's own check speaks


def expand(entries: list[str | StrategySpec], common: dict[str, Any] | None = None, allocator: str | None = None,
           trust_remote_code: bool = False) -> list[StrategySpec]:
    """The grid's strategies with their options settled and checked.

    `common` options (`--strategy-option`) go to every strategy of the grid that has them (an
    entry's own options win); a key that no strategy of the grid has is an error. `allocator`
    (`--allocator`) goes to every strategy that takes one and names none itself, and with
    `trust_remote_code` such strategies may run the allocator's own code. Entries that come out
    equal are run once. Two different entries never share a run directory.
    """
    common = dict(common or {})
    specs = [e if isinstance(e, StrategySpec) else parse_spec(e) for e in entries]
    if not specs:
        raise UserError("no strategy to run; pass --strategies NAME[,NAME...] (see `resadapt-eval list strategies`)")
    used: set[str] = set()
    out: list[StrategySpec] = []
    for spec in specs:
        accepted = accepted_options(spec.name)
        options = {k: v for k, v in common.items() if k in accepted}
        used.update(options)
        options.update(spec.options)
        if allocator is not None and "allocator" in accepted and takes_allocator(spec.name, allocator):
            used.add("allocator")
            options.setdefault("allocator", allocator)
        if trust_remote_code and options.get("allocator") and "trust_remote_code" in accepted:
            options.setdefault("trust_remote_code", True)
        settled = StrategySpec(spec.name, check_options(spec.name, options))
        if settled not in out:
            out.append(settled)
    unused = sorted(set(common) - used)
    if unused:
        raise UserError(f"--strategy-option {', '.join(unused)}: no strategy of {', '.join(s.name for s in specs)} "
                        f"has this option")
    if allocator is not None and "allocator" not in used:
        owners = [n for n in STRATEGIES.names() if "allocator" in accepted_options(n) and takes_allocator(n, allocator)]
        raise UserError(f"--allocator {allocator} is for {' or '.join(owners) or 'no strategy'}, which is not among "
                        f"{', '.join(s.name for s in specs)}")
    labels: dict[str, StrategySpec] = {}
    for spec in out:
        other = labels.setdefault(spec.label, spec)
        if other != spec:
            raise UserError(f"strategies {other.options} and {spec.options} of {spec.name} would share the run "
                            f"directory {spec.label}; give their paths different folder names")
    return out
