"""Docs that run: every shell block of producers.md and running-locally.md is run by a test
as printed, or says why it cannot run here (tests/doc_blocks.py has the convention)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.doc_blocks import DOCS_THAT_RUN, REPO, shell_blocks

TESTS = REPO / "tests"


def test_the_docs_have_shell_blocks_to_check() -> None:
    for doc in DOCS_THAT_RUN:
        assert shell_blocks(doc), doc


@pytest.mark.parametrize("doc", DOCS_THAT_RUN, ids=lambda doc: doc.name)
def test_every_shell_block_is_run_or_says_why_not(doc: Path) -> None:
    unmarked = [b.where for b in shell_blocks(doc) if b.kind is None]
    assert unmarked == [], "mark each with <!-- run: ID --> or <!-- not run here: REASON -->"
    for block in shell_blocks(doc):
        if block.kind == "not run here":
            assert len(block.value.split()) >= 4, f"{block.where}: say why, in words"


def test_each_run_id_is_unique_and_run_by_a_test() -> None:
    ids = [b.value for doc in DOCS_THAT_RUN for b in shell_blocks(doc) if b.kind == "run"]
    assert len(ids) == len(set(ids)), ids
    sources = [
        path.read_text(encoding="utf-8")
        for path in TESTS.rglob("*.py")
        if path.name not in ("doc_blocks.py", "test_doc_blocks.py")
    ]
    for block_id in ids:
        pattern = re.compile(rf"doc_block\([^\n]*?, \"{re.escape(block_id)}\"\)")
        assert any(pattern.search(source) for source in sources), f"no test runs {block_id}"


def test_each_included_shell_file_is_run_by_a_test() -> None:
    sources = "\n".join(path.read_text(encoding="utf-8") for path in TESTS.rglob("test_*.py"))
    for doc in DOCS_THAT_RUN:
        for block in shell_blocks(doc):
            if block.kind == "snippet":
                assert (REPO / block.value).is_file(), block.where
                assert (REPO / block.value).name in sources, f"{block.where}: no test names it"
