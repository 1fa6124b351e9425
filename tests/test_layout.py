"""The layout the README describes is the layout of the code: every module of the package
has a row in "How it is built", and imports only what its row allows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ticker"
EVERYWHERE = {"config", "models", "errors"}  # any module may import these
JOBS = {
    "backfill",
    "scrape",
    "reference",
    "spool",
    "status",
    "series",
    "export",
    "check",
    "charts",
    "recover",
}
ROW = re.compile(r"^\| `(\w+)` \| [^|]+ \|([^|]*)\|$")


def allowed() -> dict[str, set[str]]:
    """module -> what it may import, from the README's table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        m = ROW.match(line.strip())
        if m:
            names = set(re.findall(r"`(\w+)`", m.group(2)))
            if "every job" in m.group(2):
                names |= JOBS
            table[m.group(1)] = names
    return table


def top(dotted: str) -> str:
    """ticker.store.read -> store; ticker.cli -> cli."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> set[str]:
    """The package's modules a file imports (top level and inside functions alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ticker":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("ticker."):
                found.add(top(node.module))
        elif isinstance(node, ast.Import):
            found |= {top(a.name) for a in node.names if a.name.startswith("ticker.")}
    return found


def modules() -> dict[str, list[Path]]:
    """Each module or package of ticker (a package's files together)."""
    out: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        name = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if name in ("__init__", "__main__"):
            continue
        out.setdefault(name.removesuffix(".py"), []).append(path)
    return out


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    table = allowed()
    assert set(modules()) == set(table), "README 'How it is built' and ticker/ differ"


def test_each_module_imports_only_what_its_row_allows() -> None:
    table = allowed()
    wrong = {}
    for name, paths in modules().items():
        may = table.get(name, set()) | EVERYWHERE | {name, "__version__"}
        used = set().union(*(imports(p) for p in paths))
        if used - may:
            wrong[name] = sorted(used - may)
    assert wrong == {}


def test_the_table_is_read() -> None:
    """The test above would pass on an empty table: make sure the README was read."""
    table = allowed()
    assert table["cli"] >= JOBS and table["backfill"] == {"dumps", "sources", "store"}
    assert len(table) >= 20
