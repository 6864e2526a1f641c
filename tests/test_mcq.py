"""Parity tests for resadapt_eval.adapters.mcq against lmms-eval 0.7.3.

The golden files were produced by running the original lmms-eval 0.7.3
functions (``extract_mcq_answer`` and ``videomme_doc_to_text``) on the inputs
they list; they are data, not code.
"""

import json
from pathlib import Path

import pytest

from resadapt_eval.adapters.mcq import extract_mcq_answer, mcq_correct, videomme_prompt

DATA = Path(__file__).parent / "data"
EXTRACT_CASES = json.loads((DATA / "mcq_extract_0.7.3.json").read_text(encoding="utf-8"))
PROMPT_CASES = json.loads((DATA / "videomme_prompt_0.7.3.json").read_text(encoding="utf-8"))


def test_golden_files_are_substantial():
    assert len(EXTRACT_CASES) >= 150
    assert {c["variant"] for c in PROMPT_CASES} == {"default", "qwen3_vl"}


@pytest.mark.parametrize("case", EXTRACT_CASES, ids=lambda c: repr(c["prediction"])[:40] + "|" + "".join(c["choices"]))
def test_extract_matches_lmms_eval(case):
    assert extract_mcq_answer(case["prediction"], case["choices"]) == case["expected"]


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("Based on the video, C", "C"),
        ("Answer: B", "B"),
        ("A person walks in, so the answer is C", "A"),
    ],
)
def test_disagreement_examples(prediction, expected):
    assert extract_mcq_answer(prediction) == expected


def test_default_choices_are_abcd():
    assert extract_mcq_answer("E") == ""
    assert extract_mcq_answer("") == ""
    assert extract_mcq_answer("the answer is c") == ""


@pytest.mark.parametrize("case", PROMPT_CASES, ids=lambda c: c["variant"] + "|" + c["question"][:20])
def test_prompt_matches_lmms_eval(case):
    assert videomme_prompt(case["question"], case["options"], case["variant"]) == case["expected"]


def test_prompt_exact_example_row():
    question = "What is the man holding at the start of the video?"
    options = ["A. A red umbrella.", "B. A cup of coffee.", "C. A smartphone.", "D. A newspaper."]
    assert videomme_prompt(question, options) == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What is the man holding at the start of the video?\n"
        "A. A red umbrella.\nB. A cup of coffee.\nC. A smartphone.\nD. A newspaper.\n"
        "\nAnswer with the option's letter from the given choices directly."
    )
    assert videomme_prompt(question, options, "qwen3_vl") == (
        "Question: What is the man holding at the start of the video?\n"
        "Options:\n"
        "A. A red umbrella.\nB. A cup of coffee.\nC. A smartphone.\nD. A newspaper.\n"
        "Answer with the option letter only."
    )


def test_unknown_variant_rejected():
    with pytest.raises(ValueError):
        videomme_prompt("q", ["A. x"], "gpt4v")


def test_mcq_correct():
    assert mcq_correct("C", "C")
    assert mcq_correct("c", "C")
    assert not mcq_correct("B", "C")
    assert not mcq_correct("", "C")
