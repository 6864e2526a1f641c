"""Shared fixtures: tiny random Qwen-VL checkpoints built offline, and generated datasets."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

# The lmms-eval plugin's test needs the [lmms] extra, which lives in its own environment
# (`make test-lmms` runs it there); the core environment does not collect it.
if importlib.util.find_spec("lmms_eval") is None:
    collect_ignore = ["test_lmms_plugin.py"]


@pytest.fixture(scope="session")
def tokenizer():
    from resadapt_eval.backbones.tiny import build_tokenizer
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny25(tmp_path_factory, tokenizer) -> Path:
    from resadapt_eval.backbones.tiny import build_tiny_qwen_vl
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2_5_vl", "qwen2_5_vl", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny3(tmp_path_factory, tokenizer) -> Path:
    from resadapt_eval.backbones.tiny import build_tiny_qwen_vl
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("models") / "tiny-qwen3_vl", "qwen3_vl", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def backbone25(tiny25):
    from resadapt_eval.backbones import load_backbone
    return load_backbone(str(tiny25), text_resume="hf")


@pytest.fixture(scope="session")
def backbone3(tiny3):
    from resadapt_eval.backbones import load_backbone
    return load_backbone(str(tiny3))


@pytest.fixture(scope="session")
def videomme_root(tmp_path_factory) -> Path:
    from fixtures import make_videomme
    return make_videomme(tmp_path_factory.mktemp("videomme"))
