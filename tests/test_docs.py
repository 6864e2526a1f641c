"""The documentation's shape: a README that is a user's guide, findings that name their commands,
and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FINDINGS = sorted((DOCS / "findings").glob("*.md"))
COMMAND = re.compile(r"^Commands?: .*`[^`]+`", re.M)
DATED = re.compile(r"^\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.(md|png)$")


def test_readme_is_a_short_users_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for heading in ("## Install", "## Quick start", "## One run", "## One sweep", "## The words", "## Where to go next"):
        assert heading in text, heading


def test_there_are_findings_and_each_names_its_command():
    assert FINDINGS
    for path in FINDINGS:
        assert COMMAND.search(path.read_text()), f"{path.name} does not name the command that produced its figures"


def test_findings_files_are_dated():
    for path in (DOCS / "findings").iterdir():
        assert DATED.match(path.name), f"{path.name} is not named YYYY-MM-DD-topic"


@pytest.mark.parametrize("doc", [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *FINDINGS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_that_exist(doc):
    for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", doc.read_text()):
        assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
