"""A digest of a task adapter's code: its prompt, parse and scoring rules, for the version guard.

Each adapter declares `version`, which goes into every run's config hash, so results scored by other
rules never mix into an old run directory on resume. `tests/test_adapter_versions.py` keeps each
adapter's (version, digest) and fails when the code changed but the version did not.

The digest covers the adapter's module and the helper modules of this package it takes names from
(`mcq` for Video-MME), without comments, blank lines and docstrings, so rewording them needs no new
version. It reads source text only (no AST dump), so it is the same on every Python version.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
from types import ModuleType

PACKAGE = "resadapt_eval.adapters"
SHARED = {PACKAGE, f"{PACKAGE}.base", f"{PACKAGE}.digest"}  # card reading and the registry: no rules


def scorer_modules(adapter: type) -> list[ModuleType]:
    """The adapter's module and the adapter helper modules it imports names from."""
    module = sys.modules[adapter.__module__]
    found = {module.__name__: module}
    for value in vars(module).values():
        name = getattr(value, "__module__", None) if not isinstance(value, ModuleType) else value.__name__
        if isinstance(name, str) and name.startswith(PACKAGE + ".") and name not in SHARED and name in sys.modules:
            found.setdefault(name, sys.modules[name])
    return [found[k] for k in sorted(found)]


def _code_lines(source: str) -> list[str]:
    """The source without docstrings, comment-only lines and blank lines, right-stripped."""
    skip: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                skip.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines = []
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.rstrip()
        if number in skip or not text.strip() or text.lstrip().startswith("#"):
            continue
        lines.append(text)
    return lines


def source_digest(sources: dict[str, str]) -> str:
    """sha256 (16 hex digits) of module sources by name, comments, blank lines and docstrings left out."""
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\n")
        h.update("\n".join(_code_lines(sources[name])).encode() + b"\n")
    return h.hexdigest()[:16]


def scorer_digest(adapter: type) -> str:
    """The digest of the adapter's rules as code, see the module docstring."""
    return source_digest({m.__name__: inspect.getsource(m) for m in scorer_modules(adapter)})
