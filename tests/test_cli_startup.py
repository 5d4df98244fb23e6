"""`dcocpp run` as an operator starts it: a start-up error is one line that names the thing and
the cause, exit status 1, the traceback only at DEBUG; the log level as scripts write it.

The `process` tests run `python -m dcocpp run` as a child process (no central system: the URL
points at a closed loopback port, and every error here comes before any connection)."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import can
import pytest

from dcocpp.cli import commands as cli
from dcocpp.cli.commands import EXIT_OK, EXIT_RUNTIME_ERROR, EXIT_USAGE
from dcocpp.hardware.factory import open_can_bus
from dcocpp.hardware.plc.driver import CanBusNotFound
from tests.processes import REPO_ROOT, ManagedProcess

RUN_TIMEOUT = 60.0  # every run here ends by itself within a second or two
CLOSED_CSMS = "ws://127.0.0.1:1/ocpp"  # nothing listens on port 1: never connected


def run_charger(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m dcocpp run ARGS` with the shipped configuration (or `config`)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dcocpp",
            "run",
            "--config",
            str(config or REPO_ROOT / "configs" / "charger.json"),
            "--csms",
            CLOSED_CSMS,
            *args,
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed start printed (with -q nothing else is printed), without the log
    line's time stamp and level."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    prefix = " ERROR   dcocpp: "
    assert prefix in lines[0], done.stderr
    return lines[0].split(prefix, 1)[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def can_config(tmp_path: Path, interface: str, channel: str) -> Path:
    """The shipped charger.json on the PLC backend on `interface` / `channel`, its state under
    tmp_path."""
    source = REPO_ROOT / "configs" / "charger.json"
    document = json.loads(source.read_text(encoding="utf-8"))
    document["chargePoint"].update(usePLC=True, canInterfaceType=interface, canInterface=channel)
    document["security"] = {
        key: str((source.parent / value).resolve()) for key, value in document["security"].items()
    }
    document["paths"] = {
        "dataDir": str(tmp_path / "data"),
        "logDir": str(tmp_path / "logs"),
        "ocppConfig": str(source.parent / "ocpp16-config.json"),
    }
    path = tmp_path / "charger.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.process
def test_a_busy_api_port_is_one_line(tmp_path: Path, busy_port: int) -> None:
    done = run_charger(
        "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"),
        "--api", f"127.0.0.1:{busy_port}",
    )  # fmt: skip
    assert done.returncode == EXIT_RUNTIME_ERROR, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(f"dcocpp: --api 127.0.0.1:{busy_port}: address already in use")
    assert "Traceback" not in done.stderr
    assert "Trio nursery" not in done.stderr


@pytest.mark.process
def test_the_traceback_of_a_start_up_error_only_at_debug(tmp_path: Path, busy_port: int) -> None:
    done = run_charger(
        "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"),
        "--api", f"127.0.0.1:{busy_port}", "--log-level", "debug",
    )  # fmt: skip
    assert done.returncode == EXIT_RUNTIME_ERROR, done.stderr
    assert "Traceback" in done.stderr and "dcocpp.api.contract.ApiError" in done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        f"dcocpp: --api 127.0.0.1:{busy_port}: address already in use"
    )


def _file(tmp_path: Path) -> Path:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    return blocker


# (what is wrong, the options, the line it prints: exact, or its start with "...")
DIRECTORY_CASES: list[tuple[str, Callable[[Path], list[str]], Callable[[Path], str]]] = [
    (
        "a data directory that cannot be created",
        lambda t: ["--data-dir", str(_file(t) / "data"), "--log-dir", str(t / "logs")],
        lambda t: f"data directory {t / 'file' / 'data'}: cannot create it: not a directory",
    ),
    (
        "a file where the data directory should be",
        lambda t: ["--data-dir", str(_file(t)), "--log-dir", str(t / "logs")],
        lambda t: f"data directory {t / 'file'}: not a directory",
    ),
    (
        "a data directory nothing can be written in",
        lambda t: ["--data-dir", "/proc", "--log-dir", str(t / "logs")],
        lambda t: "data directory /proc: cannot write in it: ...",
    ),
    (
        "a log directory that cannot be created",
        lambda t: ["--data-dir", str(t / "data"), "--log-dir", str(_file(t) / "logs")],
        lambda t: f"log directory {t / 'file' / 'logs'}: cannot create it: not a directory",
    ),
    (
        "a file where the log directory should be",
        lambda t: ["--data-dir", str(t / "data"), "--log-dir", str(_file(t))],
        lambda t: f"log directory {t / 'file'}: not a directory",
    ),
    (
        "a log directory nothing can be written in",
        lambda t: ["--data-dir", str(t / "data"), "--log-dir", "/proc"],
        lambda t: "log directory /proc: cannot write in it: ...",
    ),
    (
        "a directory where the message log should be",
        lambda t: ["--data-dir", str(t / "data"), "--log-dir", str(_message_log_dir(t))],
        lambda t: f"message log {t / 'logs' / 'ocpp-messages.log'}: cannot open it: is a directory",
    ),
]


def _message_log_dir(tmp_path: Path) -> Path:
    (tmp_path / "logs" / "ocpp-messages.log").mkdir(parents=True)
    return tmp_path / "logs"


@pytest.mark.process
@pytest.mark.parametrize(
    ("options", "expected"),
    [pytest.param(options, line, id=what) for what, options, line in DIRECTORY_CASES],
)
def test_a_directory_that_cannot_be_used_is_one_line(
    tmp_path: Path,
    options: Callable[[Path], list[str]],
    expected: Callable[[Path], str],
) -> None:
    done = run_charger(*options(tmp_path), "-q")
    assert done.returncode == EXIT_RUNTIME_ERROR, done.stderr
    line, wanted = error_line(done), expected(tmp_path)
    if wanted.endswith("..."):
        assert line.startswith(wanted[:-3]), line
    else:
        assert line == wanted


@pytest.mark.process
def test_a_can_channel_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    """At start, a channel that is not there (here: this machine may have no SocketCAN at all,
    or no can9) stops the charger, naming the channel, its interface type and where the bus is
    brought up. A bus that fails later is a fault and is retried (tests/test_plc_driver.py)."""
    done = run_charger("-q", config=can_config(tmp_path, "socketcan", "can9"))
    assert done.returncode == EXIT_RUNTIME_ERROR, done.stderr
    line = error_line(done)
    assert line.startswith("CAN channel can9 (interface socketcan): "), line
    assert line.endswith('; see "A real bus (the charger)" in docs/can-bus.md to bring it up')


# --- the log level ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["demo"], ["plc-sim"]])
@pytest.mark.parametrize(
    ("options", "level"),
    [
        (["--log-level", "info"], "INFO"),
        (["--log-level", "Debug"], "DEBUG"),
        (["--log-level", "WARN"], "WARNING"),
        (["--log-level", "warning"], "WARNING"),
        (["--log-level", " error "], "ERROR"),
        (["-v"], "DEBUG"),
        (["--verbose"], "DEBUG"),
        (["-q"], "WARNING"),
        (["--quiet"], "WARNING"),
    ],
)
def test_log_level_as_scripts_write_it(command: list[str], options: list[str], level: str) -> None:
    assert cli.parse_args([*command, *options]).log_level == level


def test_log_level_defaults() -> None:
    assert cli.parse_args(["run"]).log_level == "INFO"
    assert cli.parse_args(["plc-sim"]).log_level == "INFO"
    assert cli.parse_args(["demo"]).log_level is None  # warnings, inside the live view


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--log-level", "loud"],
            "argument --log-level: unknown level 'loud': one of DEBUG, INFO, WARNING, ERROR "
            "(any case; WARN works too)",
        ),
        (["-v", "-q"], "argument -q/--quiet: not allowed with argument -v/--verbose"),
        (
            ["-q", "--log-level", "info"],
            "argument --log-level: not allowed with argument -q/--quiet",
        ),
    ],
)
def test_a_bad_log_level_is_a_usage_error(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", *options])
    assert info.value.code == EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1] == f"dcocpp run: error: {message}"


@pytest.mark.process
def test_a_script_starting_the_charger_with_log_level_info_runs(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "dcocpp", "run", "--csms", CLOSED_CSMS,
        "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"),
        "--log-level", "info",
    ]  # fmt: skip
    with ManagedProcess(argv, name="charger") as charger:
        charger.stderr.wait_for_line(
            lambda line: " INFO    dcocpp.station.station: station " in line, 30
        )
        charger.send_signal()
        assert charger.wait(10) == EXIT_OK


@pytest.mark.process
def test_a_broken_user_configuration_is_reported_once(tmp_path: Path) -> None:
    """The OCPP keys the central system changed are read once at start (the command line
    and the station share them): their warning is not repeated."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "ocpp16-user-config.json").write_text("{not json")
    argv = [
        sys.executable, "-m", "dcocpp", "run", "--csms", CLOSED_CSMS,
        "--data-dir", str(data), "--log-dir", str(tmp_path / "logs"),
    ]  # fmt: skip
    with ManagedProcess(argv, name="charger") as charger:
        charger.stderr.wait_for_line(
            lambda line: " INFO    dcocpp.station.station: station " in line, 30
        )
        charger.send_signal()
        assert charger.wait(10) == EXIT_OK
    warnings = [line for line in charger.stderr.lines if "ignoring user configuration" in line]
    assert len(warnings) == 1, warnings


@pytest.mark.parametrize(
    ("raised", "cause"),
    [
        # What socketcan raises on a charger whose can0 is not there (this machine has no
        # SocketCAN, so it is raised here by hand).
        (OSError(errno.ENODEV, "No such device"), "no such device"),
        # A vendor interface whose library is not installed (python-can's pcan).
        (OSError("pcanbasic library not found"), "the interface's driver cannot be used"),
    ],
)
def test_a_can_bus_that_cannot_exist_here_is_named(
    monkeypatch: pytest.MonkeyPatch, raised: OSError, cause: str
) -> None:
    def bus(**kwargs: object) -> can.BusABC:
        raise raised

    monkeypatch.setattr(can, "Bus", bus)
    with pytest.raises(CanBusNotFound) as info:
        open_can_bus("socketcan", "can0")
    message = str(info.value)
    assert message.startswith(f"CAN channel can0 (interface socketcan): {cause}"), message
    assert "docs/can-bus.md" in message


def test_a_bus_that_exists_but_fails_is_left_to_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """can0 there but down (ENETDOWN): python-can's own error, which the driver reports as a
    fault and retries."""

    def bus(**kwargs: object) -> can.BusABC:
        raise OSError(errno.ENETDOWN, "Network is down")

    monkeypatch.setattr(can, "Bus", bus)
    with pytest.raises(OSError) as info:
        open_can_bus("socketcan", "can0")
    assert not isinstance(info.value, CanBusNotFound)


@pytest.mark.process
def test_a_second_charger_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    """Two chargers on one data directory would each stop the other's transactions as cut off
    and drive the same relays: the second is refused in one line naming the first."""
    data, logs = tmp_path / "data", tmp_path / "logs"
    argv = [
        sys.executable, "-m", "dcocpp", "run", "--csms", CLOSED_CSMS,
        "--data-dir", str(data), "--log-dir", str(logs),
    ]  # fmt: skip
    with ManagedProcess(argv, name="first") as first:
        first.stderr.wait_for_line(
            lambda line: " INFO    dcocpp.station.station: station " in line, 30
        )
        second = run_charger("-q", "--data-dir", str(data), "--log-dir", str(logs))
        assert second.returncode == EXIT_RUNTIME_ERROR, second.stderr
        assert error_line(second) == (
            f"data directory {data}: another dcocpp (pid {first.pid}) is running on it;"
            " one charger per data directory"
        )
        first.send_signal()
        assert first.wait(10) == EXIT_OK
    # Its lock went with it: the next start runs.
    with ManagedProcess(argv, name="third") as third:
        third.stderr.wait_for_line(
            lambda line: " INFO    dcocpp.station.station: station " in line, 30
        )
        third.send_signal()
        assert third.wait(10) == EXIT_OK
