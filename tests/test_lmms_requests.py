"""The lmms-eval plugin's handling of one request, without lmms-eval (its module only imports ours):
trust_remote_code reaches the strategy, a multi-visual document is refused by name, and a media
error answers with lmms-eval's failed-request marker, not an empty string."""

from __future__ import annotations

import pytest
from PIL import Image

from resadapt_eval.backbones import load_backbone
from resadapt_eval.core.budget import parse_budget
from resadapt_eval.integrations.requests import (FAILED_MARKER, MultiVisualDocument, answer_text, check_one_visual,
                                                  flag, request_failed, sample_for, strategy_options)
from resadapt_eval.pipeline.runner import evaluate_sample
from resadapt_eval.strategies import STRATEGIES
from resadapt_eval.strategies.resadapt_budget import BUNDLED


def test_trust_remote_code_reaches_a_strategy_that_takes_it():
    budget_strategy = STRATEGIES.get("resadapt-budget")
    opts = strategy_options(budget_strategy, {"allocator": str(BUNDLED["tiny-bundled"])}, trust_remote_code=True)
    assert opts == {"allocator": str(BUNDLED["tiny-bundled"]), "trust_remote_code": True}
    assert budget_strategy(**opts).trust_remote_code is True
    assert strategy_options(STRATEGIES.get("uniform-scale"), {}, trust_remote_code=True) == {}
    assert strategy_options(STRATEGIES.get("fastv"), {"layer": "3"}) == {"layer": 3}  # YAML, as --strategy-option
    with pytest.raises(ValueError, match="has no option lyer"):
        strategy_options(STRATEGIES.get("fastv"), {"lyer": "3"})
    assert flag("True") is True and flag("false") is False and flag(True) is True


def test_one_visual_per_document_or_a_clear_refusal(tmp_path):
    image = Image.new("RGB", (8, 8))
    assert check_one_visual(["/x/a.mp4"], "videomme", "test", 3) == "/x/a.mp4"
    assert check_one_visual([image], "mathvista", "testmini", 0) is image
    assert check_one_visual([], "t", "s", 0) is None and check_one_visual(None, "t", "s", 0) is None
    with pytest.raises(MultiVisualDocument, match=r"longvideobench_val_i/test document 7 has 3 visuals \(Image"):
        check_one_visual([image, image, image], "longvideobench_val_i", "test", 7)
    assert sample_for("q", "/x/a.MP4", "t", "s", 1).media_kind == "video"
    assert sample_for("q", image, "t", "s", 1).media_kind == "image"


def test_a_media_error_answers_with_the_failed_request_marker(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    backbone = load_backbone("reference")
    record = evaluate_sample(sample_for("Which?", str(broken), "videomme", "test", 0), None,
                             STRATEGIES.get("uniform-scale")(), backbone, parse_budget("0.25"), 8, 4, 0, task="videomme")
    assert record.error and record.prediction is None
    text = request_failed(record.error)
    assert text.startswith(FAILED_MARKER) and "\n" not in text and len(text) < 260
    assert answer_text("B. yes\nmore", ["\n"]) == "B. yes" and answer_text(None, None) == ""
