"""The folders are the layers, and the imports keep to them (README, "Architecture").

Every import of the package is read from its source (with `ast`: also the ones inside
functions and under `TYPE_CHECKING`, which are dependencies as much as the others) and checked
against the rules below. A planted module shows that each rule catches what it should.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dcocpp"

# Leaves any layer may import; they import only each other.
LEAVES = frozenset({"config", "storage", "idtags", "jsontypes", "clock", "defaults", "concurrency"})
# layer -> the layers it may import (besides itself and third-party code). A folder missing
# here is a layer nobody has placed yet: an error, so that a new folder gets its rules.
ALLOWED = {
    **dict.fromkeys(LEAVES, LEAVES),
    "hardware": LEAVES,
    "ocpp": LEAVES,
    "connector": LEAVES | {"hardware", "ocpp"},
    "api": LEAVES,
    "station": LEAVES | {"hardware", "ocpp", "connector", "api"},
    "demo": LEAVES | {"hardware", "ocpp", "connector", "api", "station"},
    "cli": LEAVES | {"hardware", "ocpp", "connector", "api", "station", "demo"},
    "__main__": frozenset({"cli"}),  # `python -m dcocpp`: the one importer of the cli
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
# Pure modules outside the connector, which must not load trio either (with what they import).
PURE = ("dcocpp.clock", "dcocpp.ocpp.smartcharging.profiles", "dcocpp.ocpp.smartcharging.schedule")


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
    """`dcocpp.ocpp.session` -> `ocpp`; "" for the package's own `__init__`; None outside the
    package."""
    parts = module.split(".")
    if parts[0] != "dcocpp":
        return None
    return parts[1] if len(parts) > 1 else ""


def violations(root: Path) -> list[str]:
    """Every import of the package at `root` against the layers, every import that cannot be
    checked (a dynamic one), and every import cycle."""
    found = [f"{where}: a dynamic import, which no rule can check" for where in dynamic(root)]
    graph: dict[str, set[str]] = {}
    for imp in imports(root):
        where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
        source, target = layer(imp.importer), layer(imp.imported)
        if target is None:
            if (
                source == "connector"
                and imp.importer not in CONNECTOR_SHELL
                and imp.imported.split(".")[0].startswith("trio")
            ):
                found.append(f"{where}: the pure connector core never imports trio")
            continue
        graph.setdefault(imp.importer, set()).add(imp.imported)
        if source == target or target == "":
            continue  # the package root holds its version only, and imports nothing
        if source == "":
            found.append(f"{where}: the package's __init__ imports nothing of the package")
        elif source not in ALLOWED:
            found.append(f"{where}: {source} is no known layer (give it its place in ALLOWED)")
        elif target in ALLOWED[source]:
            continue
        elif target == "cli":
            found.append(f"{where}: nothing imports the command line")
        elif source in LEAVES:
            found.append(f"{where}: a leaf imports only leaves")
        else:
            found.append(f"{where}: {source} never imports {target}")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def dynamic(root: Path) -> Iterator[str]:
    """Where the package at `root` imports by name at run time (`importlib.import_module`,
    `__import__`)."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name.split(".")[-1] in {"import_module", "__import__"}:
                    yield f"{module_name(root, path)} (line {node.lineno}) calls {name}"


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
    assert loose == ["__init__", "__main__", "config", "idtags", "jsontypes"]


def loaded_by(module: str) -> set[str]:
    """The top-level packages importing `module` loads, in a fresh interpreter."""
    code = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


def pure_modules() -> list[str]:
    connector = [
        module_name(PACKAGE, path)
        for path in sorted((PACKAGE / "connector").glob("*.py"))
        if module_name(PACKAGE, path) not in CONNECTOR_SHELL
    ]
    return [*connector, *PURE]


@pytest.mark.parametrize("module", pure_modules())
def test_a_pure_module_loads_no_trio(module: str) -> None:
    # With everything it imports: a leaf or a contract that imports trio would drag it in.
    assert not {"trio", "trio_websocket"} & loaded_by(module)


def test_the_command_line_loads_no_web_server_for_status_and_sim() -> None:
    # `dcocpp status` and `dcocpp sim` go through the standard-library API client.
    assert not {"starlette", "hypercorn"} & loaded_by("dcocpp.cli.commands")


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
    "package root -> hardware": (
        "__init__.py",
        "from dcocpp.hardware import interface\n",
        "dcocpp (line 1) imports dcocpp.hardware.interface: the package's __init__ imports"
        " nothing of the package",
    ),
    "a new folder": (
        "web/__init__.py",
        "from dcocpp.station import station\n",
        "dcocpp.web (line 1) imports dcocpp.station.station: web is no known layer (give it its"
        " place in ALLOWED)",
    ),
    "dynamic import": (
        "ocpp/planted.py",
        "import importlib\nimportlib.import_module('dcocpp.hardware.interface')\n",
        "dcocpp.ocpp.planted (line 2) calls importlib.import_module: a dynamic import, which no"
        " rule can check",
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
    (root / path).parent.mkdir(exist_ok=True)
    (root / path).write_text(source)
    assert violations(root) == [expected]
