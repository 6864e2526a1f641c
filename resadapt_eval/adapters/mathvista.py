"""MathVista testmini in the official Hugging Face layout, prompted as lmms-eval 0.7.3, scored by rules.

Data: the `AI4Math/MathVista` dataset repo, `data/testmini-00000-of-00001-725687bf7a18d64b.parquet`
(1000 rows; `data/test-*.parquet` is the unlabelled test split). Columns: pid, question, image (a path
string), decoded_image ({"bytes", "path"}: the image itself), choices (list or null), unit, precision
(float64, NaN unless answer_type is float), answer, question_type (multi_choice | free_form),
answer_type (text | integer | float | list), metadata (category, context, grade, img_height,
img_width, language, skills, source, split, task) and query (the official prompt, which lmms-eval
hands its LLM judge).

Images: `Sample.media` is the `decoded_image` bytes opened lazily with PIL (header only; decoding all 1000
up front would hold ~1.3 GB of RGB pixels and hide decode time from the per-sample `load` timing).
`media.load_image` decodes it with `.convert("RGB")`, exactly lmms-eval's `mathvista_doc_to_visual`.
A row without usable bytes falls back to its `image` path under the data root, else becomes an error record.

Prompts are lmms-eval 0.7.3's `MathVistaEvaluator.create_one_query` with 0 shots, no caption, no OCR:
`format` (task `mathvista_testmini_format`, shot_type format-prompt), `cot` (`_cot`, step-by-step)
and `solution` (`_solution`). Checked against the original code on real rows
(`tests/data/mathvista_prompts_0.7.3.json`).

Scoring follows lmms-eval's `extract_answer` -> `normalize_extracted_answer` -> `safe_equal`, except
that answers are read by rules instead of a GPT judge. Where we deliberately differ:

* No judge by default. lmms-eval reads a response directly only when it is exactly a choice text or
  parses as int/float; everything else (even a bare "B") goes to a GPT judge, and without an API key
  becomes "" (wrong, or on a multiple-choice question the shortest choice). Given the gold answer in
  natural forms ("B", "(B)", "The answer is 1.2", "11 years", ...), lmms-eval 0.7.3 without a judge
  scores about 28% of them correct; these rules score all of them. Here rules read option letters ("B", "(B)", "B.", "The answer is
  B"), option texts (exact, then case/space/LaTeX-insensitive), numbers with units, commas and
  lead-ins, `\\boxed{}` and lists. With `judge_url` set, only the outputs the rules cannot read go to
  the judge (same few-shot prompt, model, temperature 0, max_tokens 256), and its reply is read by
  the same rules.
* `precision` is cast to int before `round`. The parquet stores it as float64, and lmms-eval's
  `round(x, 1.0)` raises TypeError, so lmms-eval scores every float question (40 of 1000) wrong.
  A missing (NaN) precision on a float question uses 2 decimals (lmms-eval raises there too; the
  official MathVista code would round to an integer) and so does its prompt hint; a precision other
  than 1 or 2 gets a hint of the same form (lmms-eval fails to build that prompt).
* A rounded 0 is written "0.0", never "-0.0".
* A multiple-choice response that is exactly a choice text keeps that text. lmms-eval re-reads it
  for "(x)" and turns choice "(c)" into option C (pids 168 and 849 have choices "(c)", "(a)", ...),
  so it scores the correct choice text wrong there.
* Lists are rewritten as "[a, b]" before the string comparison (lmms-eval compares them verbatim).
* Levenshtein closest choice: lmms-eval maps any unreadable multiple-choice answer (even "") to the
  nearest choice by edit distance, which turns noise into chance-level hits. Our `accuracy` counts an
  unreadable answer as wrong; `accuracy_closest` applies lmms-eval's fallback (to the judge's reply
  if a judge was asked, else to the response without markup and lead-in), and `closest_choice` flags the samples it decided.
* Without a judge, two guesses apply last: a free-form response is read as its last number
  (`how: last_number`), a multiple-choice one as the only "(X)" it names (`paren_letter`); with a
  judge, such responses go to the judge instead.

Per-sample scores: accuracy, accuracy_closest, unparsed (no answer read), closest_choice, judge_used.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from decimal import Decimal
from dataclasses import dataclass
from typing import Any

from PIL import Image

from resadapt_eval.core.types import Sample, UserError
from resadapt_eval.adapters import register
from resadapt_eval.adapters.base import TaskCard, evidence_meta, plain, sample_or_error

SHOT_TYPES = {"format": "format-prompt", "cot": "step-by-step", "solution": "solution"}
DEFAULT_FLOAT_PRECISION = 2
JUDGE_MODEL = "gpt-4o-2024-11-20"

# --------------------------------------------------------------------------------------------------
# Prompts (lmms-eval 0.7.3 `MathVistaEvaluator.create_one_query`, shot_num=0, no caption / OCR)
# --------------------------------------------------------------------------------------------------

_FORMAT_HINTS = {
    "multi_choice": "Answer with the option's letter from the given choices directly.",
    "integer": "Answer the question using a single integer number.",
    1: "Answer the question using a single floating-point number with one decimal place.",
    2: "Answer the question using a single floating-point number with two decimal places.",
    "list": "Answer the question using a Python list.",
}
_HINTS = {  # step-by-step and solution share their hints
    "multi_choice": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
                    "at the end.",
    "integer": "Hint: Please answer the question requiring an integer answer and provide the final value, "
               "e.g., 1, 2, 3, at the end.",
    1: "Hint: Please answer the question requiring a floating-point number with one decimal place and provide the "
       "final value, e.g., 1.2, 1.3, 1.4, at the end.",
    2: "Hint: Please answer the question requiring a floating-point number with two decimal places and provide the "
       "final value, e.g., 1.23, 1.34, 1.45, at the end.",
    "list": "Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., "
            "[1, 2, 3], [1.2, 1.3, 1.4], at the end.",
}


def float_precision(precision: Any) -> int:
    """The number of decimals of a float question: the parquet's float64 cast to int, NaN/None -> 2."""
    if precision is None:
        return DEFAULT_FLOAT_PRECISION
    try:
        value = float(precision)
    except (TypeError, ValueError):
        return DEFAULT_FLOAT_PRECISION
    return DEFAULT_FLOAT_PRECISION if math.isnan(value) else int(value)


def _hint(shot_type: str, question_type: str, answer_type: str, precision: Any) -> str:
    table = _FORMAT_HINTS if shot_type == "format-prompt" else _HINTS
    if question_type == "multi_choice":
        return table["multi_choice"]
    if answer_type == "float":
        p = float_precision(precision)
        if p in table:
            return table[p]
        if shot_type == "format-prompt":
            return f"Answer the question using a single floating-point number with {p} decimal places."
        return (f"Hint: Please answer the question requiring a floating-point number with {p} decimal places and "
                f"provide the final value at the end.")
    return table.get(answer_type, "")


def mathvista_prompt(question: str, choices: list[str] | None, unit: str | None, question_type: str,
                     answer_type: str, precision: Any, variant: str = "format") -> str:
    """The lmms-eval 0.7.3 query for `mathvista_testmini_{format,cot,solution}` (0-shot)."""
    if variant not in SHOT_TYPES:
        raise UserError(f"mathvista: unknown prompt_variant {variant!r}; known: {', '.join(SHOT_TYPES)}")
    shot_type = SHOT_TYPES[variant]
    question_text = question if shot_type == "format-prompt" else f"Question: {question}"
    if unit:
        question_text += f" (Unit: {unit})"
    if choices:
        if shot_type == "format-prompt":
            choices_text = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(choices))
        else:
            choices_text = "\n".join(["Choices:"] + [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)])
    else:
        choices_text = ""
    tail = "Solution: " if shot_type == "solution" else ""
    elements = [question_text, choices_text, _hint(shot_type, question_type, answer_type, precision), tail]
    return ("\n\n" + "\n".join(e for e in elements if e != "")).strip()


# --------------------------------------------------------------------------------------------------
# lmms-eval's normaliser and comparison (mirrored; precision cast to int)
# --------------------------------------------------------------------------------------------------

def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each costs 1), as python-Levenshtein's `distance`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def most_similar(prediction: str, choices: list[str]) -> str:
    """lmms-eval `get_most_similar`: the first choice at the smallest edit distance."""
    distances = [levenshtein(prediction, c) for c in choices]
    return choices[distances.index(min(distances))]


def _round_float(value: float, precision: Any) -> str:
    rounded = round(value, float_precision(precision))
    return str(0.0 if rounded == 0 else rounded)


def normalize_extracted_answer(extraction: Any, choices: list[str] | None, question_type: str, answer_type: str,
                               precision: Any) -> str | None:
    """lmms-eval 0.7.3 `normalize_extracted_answer`, with `precision` cast to int (NaN -> 2) and -0.0 -> 0.0."""
    if question_type == "multi_choice":
        extraction = extraction.strip() if isinstance(extraction, str) else str(extraction)
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letter:
            extraction = letter[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices or []))]
        if extraction in options:
            return choices[options.index(extraction)]
        return most_similar(extraction, list(choices or []))
    if answer_type == "integer":
        try:
            return str(int(float(extraction)))
        except Exception:
            return None
    if answer_type == "float":
        try:
            return _round_float(float(extraction), precision)
        except Exception:
            return None
    if answer_type == "list":
        try:
            return str(extraction)
        except Exception:
            return None
    return extraction


def safe_equal(prediction: Any, answer: Any) -> bool:
    """lmms-eval `safe_equal`: string equality after strip."""
    try:
        return str(prediction).strip() == str(answer).strip()
    except Exception:
        return False


# --------------------------------------------------------------------------------------------------
# Rule-based answer reading
# --------------------------------------------------------------------------------------------------

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩０１２３４５６７８９", "0123456789" * 3)
# A number, with an optional exponent ("1e3", "2.5E-2") read as its value: without it "1e3" read as 1.
_NUMBER = re.compile(r"(?:(?<![A-Za-z0-9_.])([-−]))?(?<![A-Za-z0-9_.])"
                     r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE]([-+−]?\d+))?(?!\d)")
_LEAD_IN = re.compile(
    r"(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+)?(?:final\s+|correct\s+|best\s+|right\s+)?"
    r"(?:answer|option|choice)\b(?:\s+is)?\s*[:：]?|答案[是为：:]?|最终答案[是为：:]?", re.IGNORECASE)
_LETTER_PAREN = re.compile(r"\(([A-Za-z])\)(?:\s.*)?", re.DOTALL)
_LETTER_BARE = re.compile(r"([A-Za-z])(?:[.:：)](?:\s.*)?|\n.*)?", re.DOTALL)
# After "B." / "(B)": another option named ("(C)", "or C", a new "C." line) makes the letter unclear.
_ANOTHER_LETTER = re.compile(r"\([A-Z]\)|\b(?:or|and)\s+\(?[A-Z]\)?(?![A-Za-z])|\n\s*\(?[A-Z][.:：)]")
_ANSWER_MARK = re.compile(r"\b(?:answer|option|choice)(?:\s+is)?\s*[:：]|\b(?:answer|option|choice)\s+is\b"
                          r"|答案[是为：:]", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def _strip_markup(text: str) -> str:
    text = text.translate(_DIGITS)
    text = re.sub(r"</?answer>|\*\*|__|`", "", text)
    return text.strip()


def _clean(text: str) -> str:
    """A short answer's core: no markup, lead-in ("The answer is", "Answer:"), quotes or final period."""
    t = _strip_markup(text)
    boxed = _BOXED.findall(t)
    if boxed:
        t = boxed[-1]
    m = _LEAD_IN.match(t)
    if m and m.end() > 0:
        t = t[m.end():]
    t = t.strip().strip("\"'“”‘’").strip()
    t = re.sub(r"^\$+|\$+$", "", t).strip()
    return t.rstrip(".。!！").strip()


def _tail_after_lead_in(text: str) -> str | None:
    """The rest of the line after the last "answer is" / "answer:" / "\\boxed{...}", if any."""
    t = _strip_markup(text)
    boxed = _BOXED.findall(t)
    if boxed:
        return boxed[-1]
    hits = list(_ANSWER_MARK.finditer(t))
    if not hits:
        return None
    return t[hits[-1].end():].split("\n", 1)[0]


def _norm_text(text: str) -> str:
    t = _strip_markup(text).casefold()
    t = re.sub(r"[\s$]+", "", t)
    return t.rstrip(".。!！")


def _numbers(text: str) -> list[str]:
    """Every number in `text` as a plain decimal string ("1,000" -> "1000", "2.5e2" -> "250")."""
    out = []
    for sign, num, exp in _NUMBER.findall(text.translate(_DIGITS)):
        num = num.replace(",", "")
        if exp:
            num = format(Decimal(f"{num}e{exp.replace('−', '-')}"), "f")
            if "." in num:
                num = num.rstrip("0").rstrip(".")
        out.append((sign and "-") + num)
    return out


def _choice_from_core(core: str, choices: list[str]) -> tuple[str | None, str]:
    """A choice text from a short answer: exact text, option letter, normalised text, or number."""
    if core in choices:
        return core, "choice_text"
    n = len(choices)
    for pattern in (_LETTER_PAREN, _LETTER_BARE):
        m = pattern.fullmatch(core)
        if m and not _ANOTHER_LETTER.search(core, m.end(1) + 1):
            index = ord(m.group(1).upper()) - ord("A")
            if 0 <= index < n:
                return choices[index], "letter"
    target = _norm_text(core)
    if target:
        hits = {c for c in choices if _norm_text(c) == target}
        if len(hits) == 1:
            return hits.pop(), "choice_text_normalized"
    nums = _numbers(core)
    if len(nums) == 1 and re.fullmatch(r"[^\dA-Za-z]*[-−]?[\d.,]+[^\dA-Za-z]*", core.translate(_DIGITS)):
        hits = {c for c in choices if _numbers(c) == nums or _same_number(_numbers(c), nums[0])}
        if len(hits) == 1:
            return hits.pop(), "choice_number"
    return None, ""


def _same_number(nums: list[str], value: str) -> bool:
    try:
        return len(nums) == 1 and float(nums[0]) == float(value)
    except ValueError:
        return False


def read_choice(response: str, choices: list[str], *, allow_weak: bool = True) -> tuple[str | None, str]:
    """The choice a multiple-choice response commits to, and how it was read; (None, "") if unclear.

    `allow_weak` adds the guess "the only (X) named in the response" (left to the judge when there is one).
    """
    if response in choices:  # lmms-eval's own first test
        return response, "choice_text"
    text, how = _choice_from_core(_clean(response), choices)
    if text is not None:
        return text, how
    tail = _tail_after_lead_in(response)
    if tail is not None:
        text, how = _choice_from_core(_clean(tail), choices)
        if text is not None:
            return text, "answer_is_" + how
    stripped = _strip_markup(response)
    letters = {m for m in re.findall(r"\(([A-Z])\)", stripped) if ord(m) - ord("A") < len(choices)}
    if allow_weak and len(letters) == 1:
        return choices[ord(letters.pop()) - ord("A")], "paren_letter"
    lowered = stripped.casefold()
    folded = {c: c.strip().casefold() for c in choices}
    starts = {c for c, f in folded.items() if f and lowered.startswith(f)
              and (len(lowered) == len(f) or not lowered[len(f)].isalnum())}
    if starts:
        longest = max(len(folded[c]) for c in starts)
        best = {c for c in starts if len(folded[c]) == longest}
        if len(best) == 1:
            return best.pop(), "leading_text"
    return None, ""


def _drop_unit(text: str, unit: str | None) -> str:
    """The text without the question's unit ("years", "cm^2"), matched as a whole word."""
    if unit and unit.strip():
        text = re.sub(r"(?<![A-Za-z])" + re.escape(unit.strip()) + r"(?![A-Za-z])", " ", text, flags=re.IGNORECASE)
    return text


def read_number(response: str, unit: str | None, *, allow_weak: bool = True) -> tuple[str | None, str]:
    """The number a free-form response commits to, as a plain string ("1000", "-4.3").

    `allow_weak` adds the guess "the last number" (left to the judge when there is one).
    """
    core = _drop_unit(_clean(response), unit)
    nums = _numbers(core)
    if len(nums) == 1:
        return nums[0], "number"
    tail = _tail_after_lead_in(response)
    if tail is not None:
        nums = _numbers(_drop_unit(tail, unit))
        if nums:
            return nums[0], "answer_is_number"
    nums = _numbers(_drop_unit(_strip_markup(response), unit))
    if len(nums) == 1:
        return nums[0], "single_number"
    if allow_weak and nums:
        return nums[-1], "last_number"
    return None, ""


_LIST_ONLY = re.compile(r"[\[\](){}\s,;0-9.\-−]*")


def read_list(response: str) -> tuple[str | None, str]:
    """A list answer rewritten as "[a, b, c]"."""
    text = _strip_markup(response)
    brackets = re.findall(r"\[([^\[\]]*)\]", text)
    if brackets:
        items = [i.strip().strip("\"'") for i in brackets[-1].split(",")]
        if all(items):
            return "[" + ", ".join(_plain_number(i) for i in items) + "]", "list"
    core = _clean(response)
    if core and _LIST_ONLY.fullmatch(re.sub(r"\band\b|&", ",", core.translate(_DIGITS), flags=re.IGNORECASE)):
        nums = _numbers(core)
        if nums:
            return "[" + ", ".join(nums) + "]", "list_numbers"
    return None, ""


def _plain_number(item: str) -> str:
    nums = _numbers(item)
    if len(nums) == 1 and re.fullmatch(r"[-−]?[\d,]*\.?\d+", item.translate(_DIGITS)):
        return nums[0]
    return item


@dataclass(frozen=True)
class Problem:
    question_type: str
    answer_type: str
    choices: list[str] | None
    unit: str | None
    precision: Any

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Problem":
        return cls(meta.get("question_type", "free_form"), meta.get("answer_type", "text"), meta.get("choices"),
                   meta.get("unit"), meta.get("precision"))


def read_answer(response: str, problem: Problem, *, allow_weak: bool = True) -> tuple[str | None, str]:
    """(normalised answer, how it was read) from a response, or (None, "") if the rules cannot read it.

    `allow_weak` permits the two guesses `paren_letter` and `last_number`; with a judge they are off
    and such responses go to the judge.

    The normalised answer is what lmms-eval's `safe_equal` compares with the gold answer.
    """
    response = (response or "").strip()
    if not response:
        return None, ""
    if problem.question_type == "multi_choice" and problem.choices:
        return read_choice(response, list(problem.choices), allow_weak=allow_weak)
    kind = problem.answer_type
    if kind == "integer":
        try:  # lmms-eval: int(response)
            return str(int(response)), "int"
        except ValueError:
            pass
    if kind == "float":
        try:  # lmms-eval: float(response)
            return _round_float(float(response), problem.precision), "float"
        except ValueError:
            pass
    if kind in ("integer", "float"):
        value, how = read_number(response, problem.unit, allow_weak=allow_weak)
        if value is None:
            return None, ""
        normalized = normalize_extracted_answer(value, None, problem.question_type, kind, problem.precision)
        return (normalized, how) if normalized is not None else (None, "")
    if kind == "list":
        return read_list(response)
    core = _clean(response)
    return (core, "text") if core else (None, "")


# --------------------------------------------------------------------------------------------------
# Optional LLM judge (lmms-eval's few-shot extraction prompt, any OpenAI-compatible endpoint)
# --------------------------------------------------------------------------------------------------

DEMO_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""


def judge_prompt(query: str, response: str) -> str:
    """lmms-eval `create_test_prompt(DEMO_PROMPT, query, response)`."""
    return f"{DEMO_PROMPT.strip()}\n\n{query}\n\n{response}\n\nExtracted answer: "


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class Judge:
    """An OpenAI-compatible chat endpoint. The API key is read from the environment at each call and
    never kept, returned or put in a message."""

    url: str
    model: str = JUDGE_MODEL
    key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    retries: int = 3

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Judge | None":
        url = options.get("judge_url")
        if not url:
            return None
        return cls(url=str(url), model=str(options.get("judge_model") or JUDGE_MODEL),
                   key_env=str(options.get("judge_key_env") or "OPENAI_API_KEY"),
                   timeout_s=float(options.get("judge_timeout", 60)),
                   retries=max(1, int(options.get("judge_retries", 3))))

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        if url.endswith("/chat/completions"):
            return url
        if url.endswith("/v1"):
            return url + "/chat/completions"
        return url + "/v1/chat/completions"

    def extract(self, query: str, response: str) -> tuple[str, str | None]:
        """(the judge's extraction, an error message or None); "" when every attempt failed."""
        key = os.environ.get(self.key_env) or None
        messages = [{"role": "user", "content": judge_prompt(query, response)}]
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": 256}).encode("utf-8")
        error = "no attempt"
        for attempt in range(self.retries):
            try:
                request = urllib.request.Request(self.endpoint, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                if key:
                    request.add_unredirected_header("Authorization", f"Bearer {key}")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    data = json.loads(reply.read().decode("utf-8"))
                content = (data["choices"][0]["message"]["content"] or "").strip()
                if content:
                    return _scrub(content, key), None
                error = "empty reply"
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}"
            except Exception as e:  # noqa: BLE001 - any transport or format problem is a failed attempt
                error = f"{type(e).__name__}: {e}"
            if attempt + 1 < self.retries:
                time.sleep(min(2.0 ** attempt, 10.0))
        return "", _scrub(f"judge failed after {self.retries} attempt(s): {error}", key)


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------

META_KEYS = ("category", "context", "grade", "source", "language", "task")


@register("mathvista")
class MathVista:
    # The version of this adapter's prompt, parse and scoring rules: part of every run's config hash.
    # Bump it with any change that can alter a prompt, a parsed answer or a score (tests/test_adapter_versions.py).
    version = "2"  # 2: scientific notation (1e3, 2.5e2 g) read as its value
    card_keys = ("prompt_variant", "judge_url", "judge_model", "judge_key_env", "judge_timeout", "judge_retries")
    metrics = ("accuracy", "accuracy_closest", "unparsed", "closest_choice", "judge_used")
    main_metric = "accuracy"
    breakdown_keys = ("question_type", "answer_type", "category", "skills")

    def __init__(self) -> None:
        self.judge: Judge | None = None

    def configure(self, card: TaskCard) -> None:
        """Card options that shape scoring: the judge (`judge_url`, ...), if any."""
        self.judge = Judge.from_options(card.options)

    def load(self, card: TaskCard) -> list[Sample]:
        rows = card.read_parquet("data/testmini-*.parquet", "MathVista parquet")
        variant = str(card.options.get("prompt_variant", "format"))
        if variant not in SHOT_TYPES:
            raise UserError(f"mathvista: unknown prompt_variant {variant!r}; known: {', '.join(SHOT_TYPES)}")
        self.configure(card)
        samples = []
        for i, row in enumerate(rows.to_dict("records")):
            row = {k: plain(v) for k, v in row.items()}
            samples.append(sample_or_error(lambda: self.sample_from_row(row, card, i), i, row, "image", "pid"))
        return samples

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample:
        """One parquet row (plain Python values; the image may be absent when only the prompt is wanted)."""
        variant = str(card.options.get("prompt_variant", "format"))
        md = row.get("metadata") or {}
        choices = [str(c) for c in row["choices"]] if row.get("choices") is not None else None
        unit = row.get("unit") if isinstance(row.get("unit"), str) else None
        precision = row.get("precision")
        if precision is not None and not (isinstance(precision, float) and math.isnan(precision)):
            precision = int(precision)
        else:
            precision = None
        prompt = mathvista_prompt(str(row["question"]), choices, unit, row["question_type"], row["answer_type"],
                                  precision, variant)
        media, media_error = _image(card, row)
        meta = {"question_type": row["question_type"], "answer_type": row["answer_type"],
                "skills": [str(s) for s in (md.get("skills") or [])],
                **{k: md.get(k) for k in META_KEYS},
                "choices": choices, "unit": unit, "precision": precision,
                "query": row["query"] if isinstance(row.get("query"), str) else prompt}
        if media_error:
            meta["media_error"] = media_error
        meta.update(evidence_meta(row))
        answer = row.get("answer")
        return Sample(id=str(row.get("pid", index)), prompt=prompt, media_kind="image", media=media,
                      target=None if answer is None else str(answer), meta=meta,
                      question=str(row["question"]))

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        problem = Problem.from_meta(sample.meta)
        response = (prediction or "").strip()
        answer, how = read_answer(response, problem, allow_weak=self.judge is None)
        parsed: dict[str, Any] = {}
        basis = _clean(response) if response else ""
        if answer is None and self.judge is not None and response:
            reply, error = self.judge.extract(str(sample.meta.get("query") or sample.prompt), response)
            parsed["judge"] = reply
            if error:
                parsed["judge_error"] = error
            basis = reply
            if reply:
                answer, how = read_answer(reply, problem)
                how = "judge_" + how if answer is not None else ""
        correct = answer is not None and sample.target is not None and safe_equal(answer, sample.target)
        closest = None
        if answer is None and problem.question_type == "multi_choice" and problem.choices:
            closest = most_similar(basis, list(problem.choices))
        correct_closest = correct or (closest is not None and sample.target is not None
                                      and safe_equal(closest, sample.target))
        parsed.update(answer=answer, how=how or "unparsed")
        if closest is not None:
            parsed["closest"] = closest
        scores = {"accuracy": float(correct), "accuracy_closest": float(correct_closest),
                  "unparsed": float(answer is None), "closest_choice": float(closest is not None),
                  "judge_used": float("judge" in parsed)}
        return scores, parsed


def _image(card: TaskCard, row: dict[str, Any]) -> tuple[Any, str | None]:
    """The row's image, opened lazily from `decoded_image` bytes (else the `image` path); an error message."""
    decoded = row.get("decoded_image")
    raw = decoded.get("bytes") if isinstance(decoded, dict) else decoded if isinstance(decoded, bytes) else None
    if raw:
        try:
            return Image.open(io.BytesIO(raw)), None
        except Exception as e:  # noqa: BLE001 - a bad image is one error record, not a failed run
            return None, f"pid {row.get('pid')}: decoded_image is not a readable image ({type(e).__name__})"
    rel = row.get("image")
    if isinstance(rel, str) and rel:
        try:
            path = card.safe_path(rel)
        except ValueError as e:
            return None, f"pid {row.get('pid')}: {e}"
        if path.is_file():
            return str(path), None
        return None, f"pid {row.get('pid')}: no decoded_image and image not found: {path}"
    return None, f"pid {row.get('pid')}: no decoded_image"


