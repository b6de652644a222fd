"""The suite's own layout: test modules sit in the folder of the layer they exercise, every folder is a package
(so that tests/api/test_payments.py and tests/billing/test_payments.py are two modules), and no module of the
suite imports a test module or conftest: what tests share lives in tests/support."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
LAYERS = {"ledger", "billing", "api", "gateway", "app", "web"}  # web: the My Credit page (web/), in a browser


def suite_modules() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every module the module at ``path`` (holding ``source``, by default the file's text) imports, at any
    depth (line, dotted name); a name imported from a package counts as a module, since it may be one
    (``from tests.api import test_payments``)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and (parts[-1].startswith("test_") or parts[-1] == "conftest")


def test_no_module_of_the_suite_imports_a_test_module_or_conftest() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
        for path in suite_modules()
        for line, name in imported(path)
        if is_test_module(name)
    ]
    assert offenders == [], "move what they share to tests/support:\n" + "\n".join(offenders)


def test_every_folder_of_the_suite_is_a_package() -> None:
    folders = {path.parent for path in suite_modules()}
    assert sorted(str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").exists()) == []


def test_test_modules_sit_in_the_folder_of_their_layer() -> None:
    misplaced = [
        str(path.relative_to(TESTS.parent))
        for path in TESTS.rglob("test_*.py")
        if path.parent.parent != TESTS or path.parent.name not in LAYERS
    ]
    assert misplaced == [], f"test modules belong in tests/<layer>/, one of {sorted(LAYERS)}"


def test_the_checks_see_imports_in_every_form() -> None:
    conftest = "conftest"  # spelled apart, so that a grep for such imports does not find this test
    source = (
        "import tests.api.test_payments\n"
        f"from tests.{conftest} import T0\n"
        "from tests.api import test_payments\n"
        "from tests.support.payments import TOP_UP\n"
        "def f():\n    from .test_refunds import refund\n"
    )
    names = [name for _, name in imported(TESTS / "gateway" / "test_example.py", source)]
    assert [name for name in names if is_test_module(name)] == [
        "tests.api.test_payments",
        "tests.conftest",
        "tests.api.test_payments",
        "tests.gateway.test_refunds",
    ]
