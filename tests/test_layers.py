"""The folders are the layers, and the imports keep to them (README, "Layout").

Every import of the package is read from its source (with `ast`: also the ones inside
functions and under `TYPE_CHECKING`, which are dependencies as much as the others) and checked
against the rules below. A planted module shows that each rule catches what it should.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dcocpp"

# Leaves any layer may import; they import only each other.
LEAVES = frozenset({"config", "storage", "idtags", "jsontypes", "clock", "defaults", "concurrency"})
# layer -> the layers it must never import
FORBIDDEN = {
    "ocpp": {"hardware", "connector", "station", "api", "cli", "demo"},
    "hardware": {"ocpp", "connector", "station", "api", "cli", "demo"},
    "connector": {"station", "api", "cli", "demo"},
    "api": {"station", "connector", "ocpp", "hardware", "cli", "demo"},
    "station": {"cli", "demo"},
    "demo": {"cli"},
}
# The connector's shell: every other connector module is the pure core (no trio, no I/O).
CONNECTOR_SHELL = frozenset(
    {
        "dcocpp.connector.task",
        "dcocpp.connector.relay",
        "dcocpp.connector.transactions",
        "dcocpp.connector.billing",
        "dcocpp.connector.sampling",
        "dcocpp.connector.tagwaits",
        "dcocpp.connector.reservationdesk",
    }
)
# The one module that may import the command line: `python -m dcocpp`.
CLI_ENTRY = "dcocpp.__main__"


@attrs.frozen
class Import:
    importer: str
    imported: str
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> Iterator[Import]:
    """Every import in the package at `root`, by module; `from a import b` counts as an import
    of module `a.b` where that is a module, else of `a`. Imports outside the package as
    written (first component)."""
    modules = {module_name(root, path) for path in root.rglob("*.py")}
    for path in sorted(root.rglob("*.py")):
        importer = module_name(root, path)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(importer, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = importer if is_package else importer.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    yield Import(importer, candidate if candidate in modules else base, node.lineno)


def layer(module: str) -> str | None:
    """`dcocpp.ocpp.session` -> `ocpp`; None outside the package or for the package itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "dcocpp" and len(parts) > 1 else None


def violations(root: Path) -> list[str]:
    """Every import of the package at `root` against the layers, and every import cycle."""
    found = []
    graph: dict[str, set[str]] = {}
    for imp in imports(root):
        where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
        source, target = layer(imp.importer), layer(imp.imported)
        if imp.imported.startswith("dcocpp"):
            graph.setdefault(imp.importer, set()).add(imp.imported)
        if source is None or source == target:
            continue
        if target == "cli" and imp.importer != CLI_ENTRY:
            found.append(f"{where}: nothing imports the command line")
        elif source in LEAVES and target is not None and target not in LEAVES:
            found.append(f"{where}: a leaf imports only leaves")
        elif target in FORBIDDEN.get(source, ()):
            found.append(f"{where}: {source} never imports {target}")
        if (
            source == "connector"
            and imp.importer not in CONNECTOR_SHELL
            and imp.imported.split(".")[0] == "trio"
        ):
            found.append(f"{where}: the pure connector core never imports trio")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (or a
    module importing itself), Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append([*sorted(component), sorted(component)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_imports_keep_to_the_layers() -> None:
    assert violations(PACKAGE) == []


def test_only_the_leaves_are_loose_at_the_top() -> None:
    loose = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert loose == ["__init__", "__main__", "clock", "config", "idtags", "jsontypes"]


def test_the_api_client_and_the_status_command_load_no_web_server() -> None:
    # `dcocpp status` and `dcocpp sim` run anywhere: the standard library only.
    for module in ("dcocpp.api.client", "dcocpp.api.contract", "dcocpp.cli.sim"):
        third_party = {
            imp.imported.split(".")[0]
            for imp in imports(PACKAGE)
            if imp.importer == module and not imp.imported.startswith("dcocpp")
        }
        assert third_party <= {"__future__", *sys.stdlib_module_names}, module


PLANTED = {
    "ocpp -> hardware": (
        "ocpp/planted.py",
        "from dcocpp.hardware.interface import HardwareError\n",
        "dcocpp.ocpp.planted (line 1) imports dcocpp.hardware.interface: ocpp never imports"
        " hardware",
    ),
    "hardware -> ocpp": (
        "hardware/planted.py",
        "from dcocpp.ocpp import errors\n",
        "dcocpp.hardware.planted (line 1) imports dcocpp.ocpp.errors: hardware never imports ocpp",
    ),
    "pure connector -> trio": (
        "connector/planted.py",
        "import trio\n",
        "dcocpp.connector.planted (line 1) imports trio: the pure connector core never imports"
        " trio",
    ),
    "api -> station": (
        "api/planted.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from dcocpp.station.station import Station\n",
        "dcocpp.api.planted (line 3) imports dcocpp.station.station: api never imports station",
    ),
    "anything -> cli": (
        "station/planted.py",
        "def later():\n    from dcocpp.cli import commands\n",
        "dcocpp.station.planted (line 2) imports dcocpp.cli.commands: nothing imports the"
        " command line",
    ),
    "leaf -> ocpp": (
        "storage/planted.py",
        "from dcocpp.ocpp.errors import OcppError\n",
        "dcocpp.storage.planted (line 1) imports dcocpp.ocpp.errors: a leaf imports only leaves",
    ),
    "cycle": (
        "ocpp/planted.py",
        "from dcocpp.ocpp import session\n",
        "import cycle: dcocpp.ocpp.planted -> dcocpp.ocpp.session -> dcocpp.ocpp.planted",
    ),
}


@pytest.mark.parametrize(("path", "source", "expected"), PLANTED.values(), ids=PLANTED)
def test_a_planted_import_against_the_layers_is_caught(
    tmp_path: Path, path: str, source: str, expected: str
) -> None:
    root = tmp_path / "dcocpp"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    if expected.startswith("import cycle"):
        # The session imports the planted module back: a cycle of two.
        session = root / "ocpp" / "session.py"
        session.write_text(session.read_text() + "\nfrom dcocpp.ocpp import planted\n")
    (root / path).write_text(source)
    assert violations(root) == [expected]
