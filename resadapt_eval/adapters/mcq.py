"""Multiple-choice answer extraction and VideoMME prompting.

Re-implements, in our own code but with identical behaviour, two pieces of
lmms-eval 0.7.3 (https://github.com/EvolvingLMMs-Lab/lmms-eval, MIT licence,
Copyright (c) LMMs-Lab):

* ``lmms_eval/tasks/_task_utils/mcq_extract.py::extract_mcq_answer`` - the
  priority-ranked choice-letter extractor that VideoMME uses to score outputs;
* ``lmms_eval/tasks/videomme/utils.py::videomme_doc_to_text`` (and its
  ``videomme_doc_to_text_qwen3vl`` branch) with the ``lmms_eval_specific_kwargs``
  of ``lmms_eval/tasks/videomme/videomme.yaml`` for the ``default`` and
  ``qwen3_vl`` entries, plus the correctness test of ``videomme_process_results``.

Parity is checked against the original functions by
``tests/data/mcq_extract_0.7.3.json`` and ``tests/data/videomme_prompt_0.7.3.json``.
Upstream quirks are kept on purpose (see ``extract_mcq_answer``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "extract_mcq_answer",
    "videomme_prompt",
    "mcq_correct",
    "VIDEOMME_INSTRUCTION",
    "VIDEOMME_POST_PROMPTS",
]

# Used when an empty/None choice list is passed (upstream default: A..H).
_FALLBACK_CHOICES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G", "H")

# Characters peeled off both ends of the response, one kind after another,
# in this exact order (order matters: e.g. "C.," loses "," first, then ".").
_EDGE_PUNCTUATION = ",.!?;:'\""

# Lower-cased phrases after which the next occurrence of each choice is a
# candidate. Order is significant only for tie-breaking; kept as upstream.
_LEAD_IN_PHRASES: tuple[str, ...] = (
    "the answer is",
    "answer is",
    "the correct answer is",
    "correct answer is",
    "the best answer is",
    "best answer is",
    "the correct option is",
    "correct option is",
    "the best option is",
    "best option is",
    "the choice is",
    "choice is",
    "the correct choice is",
    "correct choice is",
    "i choose",
    "i select",
    "i pick",
    "my answer is",
    "my choice is",
    "옵션",
    "정답은",
    "답은",
    "답:",
    "答案是",
    "答案为",
    "选",
    "答えは",
)

# Confidence of each way a choice can appear (higher wins).
_P_START, _P_END, _P_PHRASE = 10, 9, 7
_P_PAREN, _P_PERIOD, _P_COLON, _P_RPAREN, _P_SPACE, _P_ANY = 6, 5, 4, 3, 2, 0

# Suffix patterns searched with their last occurrence, in upstream order.
_MARKED_FORMS: tuple[tuple[str, str, int], ...] = (
    ("(", ")", _P_PAREN),
    ("", ".", _P_PERIOD),
    ("", ":", _P_COLON),
    ("", ")", _P_RPAREN),
    ("", " ", _P_SPACE),
)

VIDEOMME_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)

# post_prompt values from videomme.yaml's lmms_eval_specific_kwargs.
VIDEOMME_POST_PROMPTS: dict[str, str] = {
    "default": "\nAnswer with the option's letter from the given choices directly.",
    "qwen3_vl": "Answer with the option letter only.",
}
_QWEN3_VL_PRE_PROMPT = "Question: "


def extract_mcq_answer(prediction: str, choices: Sequence[str] = ("A", "B", "C", "D")) -> str:
    """Return the choice found in ``prediction``, or ``""`` if there is none.

    Every appearance of a choice is ranked: whole text starts with it (10),
    ends with it (9), after an answer phrase (7), ``(X)`` (6), ``X.`` (5),
    ``X:`` (4), ``X)`` (3), ``X `` (2); the best rank wins and, within a rank,
    the later position. Only when none of these match is any bare occurrence
    (0) used. Matching is case-sensitive (``"b"`` is not ``B``) and ignores
    word boundaries except for start/end, so ``"Answer"`` yields ``A``. The
    result is the matching entry of ``choices`` as given. An empty ``choices``
    falls back to A-H, as upstream does.
    """
    if not prediction or not prediction.strip():
        return ""
    options = list(choices) if choices else list(_FALLBACK_CHOICES)

    body = prediction.strip()
    for mark in _EDGE_PUNCTUATION:
        body = body.strip(mark)
    padded = f" {body} "
    core = padded.strip()

    # (priority, position, choice); order of insertion settles exact ties.
    found: list[tuple[int, int, str]] = []

    for prefix, suffix, rank in _MARKED_FORMS:
        for opt in options:
            pattern = prefix + opt + suffix
            where = padded.rfind(pattern)
            if where != -1:
                found.append((rank, where, opt))

    # Upstream locates the phrase in the lower-cased text but reads the
    # letter from the original; str.lower() may change the length (e.g.
    # U+0130), and that offset drift is reproduced here deliberately.
    folded = padded.lower()
    for phrase in _LEAD_IN_PHRASES:
        hit = folded.find(phrase)
        if hit == -1:
            continue
        after = hit + len(phrase)
        for opt in options:
            where = padded.find(opt, after)
            if where != -1:
                found.append((_P_PHRASE, where, opt))

    for opt in options:
        if core.startswith(opt) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_P_START, 0, opt))
    for opt in options:
        if core.endswith(opt) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_P_END, len(padded) - 1, opt))

    if not found:
        for opt in options:
            where = padded.rfind(opt)
            if where != -1:
                found.append((_P_ANY, where, opt))

    best: tuple[int, int, str] | None = None
    for cand in found:
        if best is None or cand[:2] > best[:2]:
            best = cand
    return best[2] if best is not None else ""


def videomme_prompt(question: str, options: Sequence[str], variant: str = "default") -> str:
    """Build the VideoMME text prompt (``videomme`` task, lmms-eval 0.7.3).

    ``options`` already carry their ``"A. "`` prefixes and are joined with
    newlines. ``variant`` is ``"default"`` (any model without its own entry in
    videomme.yaml) or ``"qwen3_vl"``. Note the default wording mentions
    subtitles even though this task has none, and its post prompt starts with
    a newline, leaving a blank line before it.
    """
    option_block = "\n".join(str(opt) for opt in options)
    if variant == "default":
        return "\n".join((VIDEOMME_INSTRUCTION, question, option_block, VIDEOMME_POST_PROMPTS["default"]))
    if variant == "qwen3_vl":
        return f"{_QWEN3_VL_PRE_PROMPT}{question}\nOptions:\n{option_block}\n{VIDEOMME_POST_PROMPTS['qwen3_vl']}"
    raise ValueError(f"unknown VideoMME prompt variant {variant!r}; expected 'default' or 'qwen3_vl'")


def mcq_correct(extracted: str, answer: str) -> bool:
    """Case-insensitive equality, as the per-sample ``score`` in ``videomme_process_results``.

    (Upstream's aggregate compares ``pred_answer == answer`` case-sensitively;
    with upper-case choices and gold letters the two agree.)
    """
    return extracted.lower() == answer.lower()
