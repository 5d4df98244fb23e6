"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s statecharts`."""

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff ~= 0.17.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def statecharts(session: nox.Session) -> None:
    """Fail when a committed diagram no longer matches its machine."""
    session.install("-e", ".")
    session.run("python", "-m", "dcocpp", "statecharts", "--check")
