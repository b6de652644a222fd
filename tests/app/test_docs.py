"""The project's own documents stay true: every module and test that docs/ names exists, every rule a
comment points to has its heading in docs/rules.md, and no comment cites a document the repository lacks."""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime
from pathlib import Path

from creditline.webhooks.sending import body_of
from models.outbox import EventType
from models.webhook_deliveries import Claimed
from tests.support import readme_events

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("docs/architecture.md", "docs/rules.md")
SOURCES = ("creditline", "billing", "schema", "resolvers", "models", "gateway", "tests", "bench")
NAMED = re.compile(r"`((?:[a-z_]+/)+[a-z_]+\.py)(?:::([A-Za-z_0-9]+))?`")
POINTER = re.compile(r"docs/rules\.md[,:]? *")
QUOTED = re.compile(r'"([^"]+)"(?:,? and |, )?')


def _python_files() -> list[Path]:
    return [path for top in SOURCES for path in (ROOT / top).rglob("*.py") if ".venv" not in path.parts]


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def _rule_names(after: str, headings: set[str]) -> list[str]:
    """The rule names a pointer gives: ``"A", "B" and "C"``, or ``A, B and C`` unquoted up to its ``)``, ``.``
    or ``;``. Unquoted names are read as headings joined by ", " and " and " (a heading may hold "and"); what
    does not read so is returned whole, so that the test names it."""
    names: list[str] = []
    at = 0
    while quoted := QUOTED.match(after, at):
        names.append(quoted.group(1))
        at = quoted.end()
    if names:
        return names
    plain = re.match(r"[A-Z][^).;]*", after)
    if plain is None:
        return []
    text, found = plain.group(0).rstrip(" ,:"), list[str]()
    while text:
        heading = next((h for h in sorted(headings, key=len, reverse=True) if text.startswith(h)), None)
        if heading is None:
            return [*found, text]
        found.append(heading)
        text = text[len(heading) :].removeprefix(",").removeprefix(" and").removeprefix(" ")
    return found


def test_every_module_and_test_the_documents_name_exists() -> None:
    missing = []
    for doc in DOCS:
        for path, test in NAMED.findall((ROOT / doc).read_text()):
            if not (ROOT / path).is_file():
                missing.append(f"{doc}: {path}")
            elif test and test not in _functions(ROOT / path):
                missing.append(f"{doc}: {path}::{test}")
    assert missing == []


def test_every_rule_names_where_it_is_enforced_and_the_test_that_proves_it() -> None:
    sections = re.split(r"\n### ", (ROOT / "docs/rules.md").read_text())[1:]
    assert len(sections) >= 20
    for section in sections:
        title = section.splitlines()[0]
        assert "- Enforced: `" in section, title
        assert re.search(r"- Proved: `tests/[a-z_/]+\.py::test_", section), title


def test_the_rules_that_comments_point_to_have_their_heading() -> None:
    headings = set(re.findall(r"^### (.+)$", (ROOT / "docs/rules.md").read_text(), flags=re.M))
    pointed: dict[str, set[str]] = {}
    for path in _python_files():
        if path.name == "test_docs.py":
            continue
        text = " ".join(path.read_text().split())  # a pointer may wrap over lines
        for match in POINTER.finditer(text):
            for name in _rule_names(text[match.end() :], headings):
                pointed.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    unknown = {name: sorted(paths) for name, paths in pointed.items() if name not in headings}
    assert pointed, "no comment points to docs/rules.md"
    assert unknown == {}


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _python_files()
        if path.name != "test_docs.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bDESIGN(\.md| \d)", line)
    ]
    assert cited == []


def _events_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Events and webhooks\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def test_every_event_type_has_its_row_and_an_example_payload_in_the_readme() -> None:
    section = _events_section()
    rows = re.findall(r"^\| `([a-z_.]+)` \|", section, re.MULTILINE)
    types = [t.value for t in EventType]
    assert sorted(rows) == sorted(types)  # each once, none unknown
    examples = section[section.index("### Example payloads") :]
    assert [t for t in types if f"`{t}`" not in examples] == []


def test_the_readmes_body_timestamps_are_written_as_the_sender_writes_them() -> None:
    readme = (ROOT / "README.md").read_text()
    stamps = re.findall(r'"timestamp": "([0-9][^"]*)"', readme)  # the examples, not the placeholder
    assert len(stamps) >= 4
    for stamp in stamps:
        at = datetime.fromisoformat(stamp)
        claimed = Claimed(1, 1, 1, "https://hooks.example.com/in", (), "evt_x", "balance.low", at, 1, {})
        assert json.loads(body_of(claimed))["timestamp"] == stamp


def test_every_event_type_has_an_example_payload_the_outbox_is_held_to() -> None:
    """``tests.support.events.emitted`` holds every event a test reads from the outbox to these examples."""
    assert sorted(readme_events.examples()) == sorted(t.value for t in EventType)
    low = readme_events.examples()["balance.low"].data
    assert readme_events.undocumented("balance.low", low) == []
    assert readme_events.undocumented("balance.low", {**low, "available": 9, "extra": "x"}) == [
        "balance.low: available is a number, the README shows a str",
        "balance.low: extra is emitted and not documented",
    ]
    account = {**low["account"], "pool": None}
    assert readme_events.undocumented("balance.low", {**low, "account": account}) == [
        "balance.low: account.pool is emitted and not documented"
    ]
    # a variant's field named in its paragraph: auto_top_up.disabled has reason instead of nextAttemptAt
    failed = readme_events.examples()["auto_top_up.disabled"].data
    assert readme_events.undocumented("auto_top_up.disabled", {**failed, "reason": "Declined 3 times"}) == []
