"""A charger installed with pip, without the repository: the default configuration it ships
(`dcocpp.defaults`), `dcocpp init DIR` writing it, and the hint when there is no configuration."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path, PurePosixPath

import pytest

from dcocpp import defaults
from dcocpp.cli import commands as cli
from dcocpp.config import load_charger_config
from tests.processes import ManagedProcess, api_port, api_request

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (defaults.CHARGER_JSON, defaults.OCPP_CONFIG_JSON)
PROCESS_TIMEOUT = 20.0


# --- the shipped defaults --------------------------------------------------------------------


def test_the_shipped_defaults_are_the_repository_configs() -> None:
    """configs/ is the repository's copy of the package's defaults, never a second one that
    drifts: a change to one must be made to both (dcocpp/defaults/ and configs/)."""
    package = resources.files("dcocpp.defaults")
    for name in SHIPPED:
        assert package.joinpath(name).read_bytes() == (REPO / "configs" / name).read_bytes(), name
        assert defaults.read_text(name) == (REPO / "configs" / name).read_text(encoding="utf-8")


def test_the_defaults_are_package_data_of_the_wheel() -> None:
    """What the wheel carries: dcocpp.defaults is a package (setuptools finds it under
    `dcocpp*`) and its files match the package-data patterns of pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["dcocpp*"]
    patterns = setuptools["package-data"]["dcocpp"]
    assert (REPO / "dcocpp" / "defaults" / "__init__.py").is_file()
    for name in SHIPPED:
        inside = PurePosixPath("defaults", name)
        assert any(inside.match(pattern) for pattern in patterns), (name, patterns)
    # Read through importlib.resources: beside the package's modules, wherever it is installed.
    package = resources.files("dcocpp.defaults")
    assert Path(str(package)) == Path(defaults.__file__).parent
    assert all(package.joinpath(name).is_file() for name in SHIPPED)


def test_license_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


# --- dcocpp init -----------------------------------------------------------------------------


def test_init_writes_a_configuration_that_check_config_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "site" / "charger-7"
    assert cli.main(["init", str(target)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    charger_json = target / "charger.json"
    assert f"wrote {charger_json}" in out
    assert f"wrote {target / 'ocpp16-config.json'}" in out
    # What to edit first, and the commands that check and run it.
    for field in ("chargePoint.id", "centralSystemURI", "connectors", "usePLC", "canInterface"):
        assert field in out
    assert f"dcocpp check-config {charger_json}" in out
    assert f"dcocpp run --config {charger_json}" in out

    assert cli.main(["check-config", str(charger_json)]) == cli.EXIT_OK
    assert "OK (2 connectors" in capsys.readouterr().out

    # The template, laid out for a directory of its own: state and logs beside it.
    config = load_charger_config(charger_json)
    resolved = target.resolve()
    assert config.data_dir == resolved / "data"
    assert config.log_dir == resolved / "logs"
    assert config.ocpp_config_path == resolved / "ocpp16-config.json"
    for where in (config.security.csms_ca_bundle, config.security.client_cert_dir):
        assert where.is_relative_to(resolved / "data")
    written = json.loads(charger_json.read_text(encoding="utf-8"))
    template = json.loads((REPO / "configs" / "charger.json").read_text(encoding="utf-8"))
    for document in (written, template):
        del document["security"], document["paths"]
    assert written == template
    assert (target / "ocpp16-config.json").read_bytes() == (
        REPO / "configs" / "ocpp16-config.json"
    ).read_bytes()


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["init", str(tmp_path)]) == cli.EXIT_OK
    charger_json = tmp_path / "charger.json"
    charger_json.write_text('{"edited": true}\n', encoding="utf-8")
    (tmp_path / "ocpp16-config.json").unlink()
    capsys.readouterr()

    assert cli.main(["init", str(tmp_path)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"dcocpp init: {charger_json} exists: not overwriting (--force replaces)\n")
    # Nothing was written: neither the edited file nor the missing one.
    assert charger_json.read_text(encoding="utf-8") == '{"edited": true}\n'
    assert not (tmp_path / "ocpp16-config.json").exists()

    assert cli.main(["init", "--force", str(tmp_path)]) == cli.EXIT_OK
    assert charger_json.read_text(encoding="utf-8") == defaults.installed_charger_json()
    assert (tmp_path / "ocpp16-config.json").is_file()


def test_init_where_a_file_is_in_the_way_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    assert cli.main(["init", str(blocker / "charger")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"dcocpp init: cannot write the configuration into {blocker}")
    assert err.count("\n") == 1


def test_init_failing_at_the_second_file_leaves_no_half_configuration(tmp_path: Path) -> None:
    """The second file cannot be written (a directory is in its way): the first one, written
    by this call, is taken back, so that the message's "not written" is the truth."""
    target = tmp_path / "charger"
    (target / "ocpp16-config.json").mkdir(parents=True)
    with pytest.raises(defaults.InitError):
        defaults.write_configuration(target, force=True)
    assert sorted(p.name for p in target.iterdir()) == ["ocpp16-config.json"]


@pytest.mark.process
def test_an_initialized_charger_runs_outside_the_repository(tmp_path: Path) -> None:
    """pip-installed use: init, then run from a folder with no configs/ in it; the state and
    logs go where init said."""
    init = subprocess.run(
        [sys.executable, "-m", "dcocpp", "init", "charger"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    with socket.socket() as probe:  # a central system that is not there: nothing listens
        probe.bind(("127.0.0.1", 0))
        csms_port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "dcocpp", "run", "--config", "charger/charger.json"]
    argv += ["--csms", f"ws://127.0.0.1:{csms_port}/ocpp", "--api", "127.0.0.1:0"]
    with ManagedProcess(argv, name="charger", cwd=tmp_path) as charger:
        port = api_port(charger, PROCESS_TIMEOUT)
        status = api_request(port, "GET", "/api/status")
        assert status["chargePoint"]["id"] == "DCOCPP-001"
        assert [c["status"] for c in status["connectors"]] == ["Available", "Available"]
        assert (tmp_path / "charger" / "data" / "dcocpp.sqlite3").is_file()
        assert (tmp_path / "charger" / "logs").is_dir()
        charger.send_signal()
        assert charger.wait(PROCESS_TIMEOUT) == cli.EXIT_OK, charger.describe()


# --- no configuration ------------------------------------------------------------------------


@pytest.mark.process
def test_run_without_a_configuration_outside_the_repository_says_how_to_get_one(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dcocpp", "run"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == cli.EXIT_USAGE
    assert done.stdout == ""
    assert done.stderr == (
        "configs/charger.json: file not found (the default when no configuration is given)\n"
        "  write one with `dcocpp init DIR`, then `dcocpp run --config DIR/charger.json`\n"
    )


@pytest.mark.parametrize(
    ("argv", "then"),
    [
        (["check-config"], "dcocpp check-config DIR/charger.json"),
        (["plc-sim", "--no-console"], "dcocpp plc-sim --config DIR/charger.json"),
    ],
)
def test_other_commands_without_a_configuration_say_how_to_get_one(
    argv: list[str],
    then: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "configs/charger.json: file not found (the default when no configuration is given)",
        f"  write one with `dcocpp init DIR`, then `{then}`",
    ]


def test_an_explicit_missing_configuration_is_not_mistaken_for_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "charger.json"
    assert cli.main(["check-config", str(missing)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{missing}: file not found" in err
    assert "dcocpp init" not in err
