"""Export every state machine as a diagram: Mermaid text always, SVG when Graphviz is there.

The files under `statecharts/` are committed and checked for freshness (`--check` and a test),
so the diagrams in the repository are the machines the code runs. The connector's statechart
and its table of events are drawn from the connector's status rules and its exhaustive
exploration (Mermaid and Markdown only); the other machines by transitions' GraphMachine.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transitions.extensions.diagrams import GraphMachine

from dcocpp.connector import exploration
from dcocpp.connector import statechart as connector
from dcocpp.ocpp import registration

# name -> (title, function that builds the machine on a model with a given Machine class)
MACHINES: dict[str, tuple[str, Callable[..., Any]]] = {
    "session-registration": (
        "OCPP session - connection and registration",
        registration.build_machine,
    ),
}
# file name -> function that draws it from the machine's own tables
DRAWN: dict[str, Callable[[], str]] = {
    "connector.mmd": connector.mermaid,
    "connector-events.md": exploration.markdown,
}
# file name -> how `--check` tells it is fresh without drawing it again (the default: draw it
# and compare): the event table carries the fingerprint of what decides it.
FRESH: dict[str, Callable[[str], bool]] = {
    "connector-events.md": exploration.generated_from_these_sources,
}


class _Model:
    """A bare model: diagrams need the machine's structure, not its callbacks."""


def mermaid(name: str) -> str:
    title, build = MACHINES[name]
    model = _Model()
    # transitions writes the title bare between the front matter's dashes; Mermaid's front
    # matter is YAML and reads the diagram's title from a `title:` key.
    build(
        model, GraphMachine, graph_engine="mermaid", title=f"title: {title}", show_conditions=True
    )
    return str(model.get_graph().draw(None)).rstrip() + "\n"  # type: ignore[attr-defined]


def _svg(name: str, path: Path) -> None:
    title, build = MACHINES[name]
    model = _Model()
    build(model, GraphMachine, graph_engine="graphviz", title=title, show_conditions=True)
    model.get_graph().draw(str(path), format="svg", prog="dot")  # type: ignore[attr-defined]


def graphviz_available() -> bool:
    return shutil.which("dot") is not None and importlib.util.find_spec("graphviz") is not None


def _files() -> dict[str, Callable[[], str]]:
    """Every committed file: name -> function that writes its text."""
    return {**DRAWN, **{f"{name}.mmd": functools.partial(mermaid, name) for name in MACHINES}}


def export(output: Path) -> list[Path]:
    """Write every diagram into `output`; returns the files written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in _files().items():
        path = output / file
        path.write_text(text(), encoding="utf-8")
        written.append(path)
    if graphviz_available():
        for name in MACHINES:
            _svg(name, output / f"{name}.svg")
            written.append(output / f"{name}.svg")
    return written


def stale(output: Path) -> list[str]:
    """Problems with the committed diagrams in `output`: one line per missing or stale file."""
    problems = []
    for file, text in _files().items():
        path = output / file
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif not _fresh(file, path.read_text(encoding="utf-8"), text):
            problems.append(f"{path}: stale (run `python -m dcocpp statecharts`)")
    return problems


def _fresh(file: str, committed: str, text: Callable[[], str]) -> bool:
    fresh = FRESH.get(file)
    return fresh(committed) if fresh is not None else committed == text()
