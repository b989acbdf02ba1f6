"""Every document reference in the code and docs resolves inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "src").rglob("*.yaml")),
           *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py")),
           *sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
SCANNED.remove(Path(__file__).resolve())  # this file spells the patterns it looks for
# "method.md section 4", "method.md sections 2-3", "method.md sections 2, 4 and 5", "[method.md](method.md) section 7"
CITATION = re.compile(r"method\.md(?:\]\([^)]*\))? sections? ((?:\d+(?:\s*(?:,|-|and)\s*)?)+)")
# documents that only exist outside the repository, and internal jargon
FOREIGN = re.compile(r"\b(?:users|environment|design)\.md\b|\brooms?\b")


def _sections() -> set[int]:
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE)}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def test_method_document_has_its_sections():
    assert _sections() == set(range(1, 10))


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve(path):
    text = _text(path)
    assert not FOREIGN.search(text), f"{path.name}: {FOREIGN.search(text).group(0)!r} is not in the repository"
    sections = _sections()
    for match in CITATION.finditer(text):
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        if "-" in match.group(1):
            numbers = list(range(min(numbers), max(numbers) + 1))
        assert set(numbers) <= sections, f"{path.name}: {match.group(0)!r} cites a section docs/method.md lacks"
    for match in re.finditer(r"(?<![\w/\[])method\.md", text):
        assert path.name == "method.md" or path.parent == ROOT / "docs", (
            f"{path.name}: cite docs/method.md by its path from the repository root")
