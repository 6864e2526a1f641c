"""Backbones: execute plans. One module per model family registers the `model_type`s it runs.

`--backbone` takes a registered alias (e.g. `reference`, the bundled model), a local checkpoint
folder, or a hub id; the checkpoint's `config.json` `model_type` picks the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resadapt_eval.core.registry import Registry
from resadapt_eval.core.types import UserError

BACKBONES = Registry("backbone model type", __name__)
register = BACKBONES.register

ASSETS = Path(__file__).resolve().parent.parent / "assets"
ALIASES: dict[str, Path] = {"reference": ASSETS / "reference"}


def resolve_alias(source: str) -> str:
    """A bundled alias to its folder; anything else unchanged."""
    if source in ALIASES:
        path = ALIASES[source]
        if not (path / "config.json").is_file():
            raise UserError(f"the bundled {source!r} backbone is not in this checkout ({path}); "
                            "pass --backbone <checkpoint folder or hub id>")
        return str(path)
    return source


def backbone_name(source: str) -> str:
    """The name a backbone gets in run directories, known without loading it: a folder's last
    part (a bundled alias is its folder), a hub id with '/' as '__'."""
    resolved = Path(resolve_alias(source)).expanduser()
    return resolved.name if resolved.is_dir() else source.replace("/", "__")


def load_backbone(source: str, **options: Any):
    """Load a backbone by alias, folder or hub id with the module registered for its model type."""
    from resadapt_eval.backbones.qwen_vl import LoadOptions, resolve_model_dir

    source = resolve_alias(source)
    model_dir = resolve_model_dir(source)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"backbone folder {model_dir} has no config.json; pass a Hugging Face checkpoint folder")
    model_type = json.loads(cfg_path.read_text()).get("model_type", "?")
    cls = BACKBONES.get(model_type)
    return cls(source, LoadOptions(**options))


def backbone_names() -> list[str]:
    return [*ALIASES, *(f"<any {t} checkpoint folder or hub id>" for t in BACKBONES.names())]
