"""docs/producers.md shows the snippets exactly as tested, and its local links resolve."""

from __future__ import annotations

import re

from tests.producers.golden import REPO, SNIPPETS

GUIDE_PATH = REPO / "docs" / "producers.md"
GUIDE = GUIDE_PATH.read_text()
INCLUDED = re.compile(r"<!-- snippet: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)
SNIPPET_FILES = sorted(
    path.relative_to(REPO).as_posix()
    for path in SNIPPETS.rglob("*")
    if path.is_file()
    # Installed, compiled or cached by running the snippets: not part of them.
    and not {"node_modules", "dist", "__pycache__"} & set(path.parts)
    and path.name != "package-lock.json"
)


def test_every_included_block_equals_its_file() -> None:
    included = INCLUDED.findall(GUIDE)
    assert included
    for path, block in included:
        assert block == (REPO / path).read_text().rstrip("\n"), path


def test_every_snippet_file_is_in_the_guide() -> None:
    assert sorted(path for path, _ in INCLUDED.findall(GUIDE)) == SNIPPET_FILES
    assert GUIDE.count("<!-- snippet: ") == len(SNIPPET_FILES)


def test_the_guide_says_the_go_snippet_is_not_compiled() -> None:
    go_section = GUIDE.split("### Go", 1)[1].split("###", 1)[0]
    assert "Not compiled by this repository's tests" in go_section


def test_relative_links_resolve() -> None:
    for target in re.findall(r"\]\((\.\./[^)#]+)", GUIDE):
        assert (GUIDE_PATH.parent / target).resolve().exists(), target


def test_the_documented_url_limit_is_the_schemas_and_the_relays() -> None:
    import json

    from callback_relay.message import MAX_CALLBACK_URL_LENGTH

    schema = json.loads((REPO / "schemas" / "callback-message.schema.json").read_text())
    limit = schema["properties"]["callback_url"]["maxLength"]
    assert limit == MAX_CALLBACK_URL_LENGTH
    assert f"`maxLength` {limit}" in GUIDE
    assert f"`maxLength` {limit}" in (REPO / "docs" / "message-contract.md").read_text()
