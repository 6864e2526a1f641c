"""Backbones: execute plans. One module per model family registers the `model_type`s it runs.

`--backbone` takes a bundled alias (`tiny-bundled`, the small model shipped in the package), a
backbone name that another installed package registered (entry-point group
`resadapt_eval.backbones`), a local checkpoint folder, or a hub id; a checkpoint's `config.json`
`model_type` picks the module that runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resadapt_eval.core.registry import BACKBONE_GROUP, Registry
from resadapt_eval.core.types import UserError

BACKBONES = Registry("backbone", __name__, BACKBONE_GROUP)
register = BACKBONES.register

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_NAME = "tiny-bundled"
ENCODER_NAME = "tiny-encoder"
ALIASES: dict[str, Path] = {
    BUNDLED_NAME: ASSETS / BUNDLED_NAME,
    "reference": ASSETS / BUNDLED_NAME,  # its former name, kept for runs and scripts that say it
    ENCODER_NAME: ASSETS / ENCODER_NAME,  # resadapt's own small encoder (training/bundled_encoder.py)
}


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
    """Load a backbone by alias, registered name, folder or hub id.

    A registered name (a plugin's, e.g. `my-backbone`) is built as `cls(source, LoadOptions)`;
    a folder or hub id by the class registered for its config's `model_type`.
    """
    from resadapt_eval.backbones.qwen_vl import LoadOptions, resolve_model_dir

    source = resolve_alias(source)
    if source in BACKBONES and not Path(source).expanduser().exists():
        return BACKBONES.get(source)(source, LoadOptions(**options))
    model_dir = resolve_model_dir(source)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"backbone folder {model_dir} has no config.json; pass a Hugging Face checkpoint folder")
    model_type = json.loads(cfg_path.read_text()).get("model_type", "?")
    cls = BACKBONES.get(model_type)
    return cls(source, LoadOptions(**options))


def backbone_names() -> list[str]:
    """What `--backbone` accepts, for `list backbones`: the bundled name, registered names, and
    checkpoints of the registered model types."""
    from resadapt_eval.backbones.qwen_vl import SUPPORTED_MODEL_TYPES

    named = [n for n in BACKBONES.names() if n not in SUPPORTED_MODEL_TYPES]
    return [BUNDLED_NAME, *named, *(f"<any {t} checkpoint folder or hub id>" for t in SUPPORTED_MODEL_TYPES)]
