"""The shell blocks of the docs a user runs by hand, and how each one is accounted for.

Every ```sh (or bash, shell, console) block in a doc of DOCS_THAT_RUN is preceded by one
marker line:

    <!-- run: ID -->                    a test runs the block as printed: doc_block(DOC, ID)
    <!-- not run here: REASON -->       it cannot run on this machine, and why
    <!-- snippet: PATH -->              the file PATH, included verbatim and run by its test

tests/test_doc_blocks.py enforces it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS_THAT_RUN = (REPO / "docs" / "producers.md", REPO / "docs" / "running-locally.md")
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[A-Za-z0-9_+-]*)[ \t]*$")
_MARKER = re.compile(r"^\s*<!-- (?P<kind>run|not run here|snippet): (?P<value>.+?) -->\s*$")


@dataclasses.dataclass(frozen=True)
class DocBlock:
    doc: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    kind: str | None  # "run", "not run here", "snippet", or None without a marker
    value: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[DocBlock]:
    """Every fenced block of `doc`, with the marker on the line before it, if any."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[DocBlock] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = opening["indent"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        marker = _MARKER.match(lines[index - 1]) if index > 0 else None
        found.append(
            DocBlock(
                doc,
                index + 1,
                opening["lang"],
                "\n".join(body) + "\n",
                marker["kind"] if marker else None,
                marker["value"] if marker else "",
            )
        )
        index = end + 1
    return found


def shell_blocks(doc: Path) -> list[DocBlock]:
    return [block for block in blocks(doc) if block.language in SHELL_LANGUAGES]


def doc_block(doc: Path, block_id: str) -> str:
    """The text of the block marked `<!-- run: block_id -->` in `doc`, as printed."""
    (block,) = [b for b in shell_blocks(doc) if b.kind == "run" and b.value == block_id]
    return block.text


def commands(text: str) -> list[str]:
    """A block's command lines, one per line, as printed (comment-only lines dropped)."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
