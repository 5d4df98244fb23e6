"""The operator's command line: help, check-config, refusing a bad config, statecharts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dcocpp.cli import commands as cli
from dcocpp.cli import statecharts

REPO = Path(__file__).resolve().parents[1]


def test_help_explains_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--help"],
        ["run", "--help"],
        ["check-config", "--help"],
        ["statecharts", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "run the charger",
        "--csms",
        "--data-dir",
        "--log-dir",
        "--log-level",
        "hard Reset",
        "check-config",
        "--check",
    ):
        assert text in out


def test_check_config_accepts_the_shipped_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(REPO / "configs" / "charger.json")]) == 0
    assert "OK (2 connectors" in capsys.readouterr().out


def test_check_config_prints_every_problem_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = json.loads((REPO / "configs" / "charger.json").read_text())
    shipped["connectors"][1]["plcId"] = 0
    shipped["connectors"][1]["id"] = 3
    shipped["chargePoint"]["centralSystemURI"] = "http://example.test/ocpp"
    bad = tmp_path / "charger.json"
    bad.write_text(json.dumps(shipped))
    (tmp_path / "ocpp16-config.json").write_text(
        (REPO / "configs" / "ocpp16-config.json").read_text()
    )
    assert cli.main(["check-config", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert "connectors[1].plcId" in err
    assert "chargePoint.centralSystemURI" in err
    assert "missing: 2" in err
    assert "Traceback" not in err


def test_check_config_reports_a_broken_ocpp_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "charger.json").write_text((REPO / "configs" / "charger.json").read_text())
    keys = json.loads((REPO / "configs" / "ocpp16-config.json").read_text())
    keys["Core"]["HeartbeatInterval"] = "often"
    (tmp_path / "ocpp16-config.json").write_text(json.dumps(keys))
    assert cli.main(["check-config", str(tmp_path / "charger.json")]) == cli.EXIT_USAGE
    assert "HeartbeatInterval" in capsys.readouterr().err


def test_run_refuses_an_invalid_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "charger.json"
    bad.write_text('{"chargePoint": {}, ')
    result = subprocess.run(
        [sys.executable, "-m", "dcocpp", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == cli.EXIT_USAGE
    assert "not starting" in result.stderr and "invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_an_invalid_csms_override(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "--config", str(REPO / "configs" / "charger.json"), "--csms", "ftp://x"]
    )
    assert code == cli.EXIT_USAGE
    assert "centralSystemURI" in capsys.readouterr().err


def test_statecharts_are_fresh() -> None:
    """The committed diagrams are the machines the code runs (python -m dcocpp statecharts)."""
    assert statecharts.stale(REPO / "statecharts") == []


@pytest.mark.parametrize("name", ["connector.mmd", "session-registration.mmd"])
def test_each_diagram_carries_its_title_as_mermaid_front_matter(name: str) -> None:
    # Mermaid's front matter is YAML: a `title:` key, its value with no colon of its own.
    lines = (REPO / "statecharts" / name).read_text().splitlines()
    assert lines[0] == "---" and lines[2] == "---" and lines[3].startswith("stateDiagram-v2")
    key, _, title = lines[1].partition(": ")
    assert key == "title" and title and ":" not in title


def test_statecharts_export_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["statecharts", "--check", "--output", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().err
    assert cli.main(["statecharts", "--output", str(tmp_path)]) == 0
    assert cli.main(["statecharts", "--check", "--output", str(tmp_path)]) == 0
    chart = tmp_path / "session-registration.mmd"
    assert "Pending --> Accepted: boot_accepted" in chart.read_text()
    chart.write_text(chart.read_text().replace("Pending", "Waiting"))
    assert cli.main(["statecharts", "--check", "--output", str(tmp_path)]) == 1
    assert "session-registration.mmd: stale" in capsys.readouterr().err
