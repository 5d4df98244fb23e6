"""Child processes for the process-level tests: start, read their output, stop, never hang.

`ManagedProcess` starts a command with both output streams piped; a thread per stream collects
the lines (and the JSON objects among them), so every wait is a bounded `wait_for(...,
timeout)`. `stop()` (also the context manager's exit) ends the process whatever state it is in
(SIGTERM, then SIGKILL), reaps it and closes its pipes: nothing leaks into the next test, and no
ResourceWarning fires under `filterwarnings = error`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]


class LineReader:
    """Collects the lines of a text stream on a daemon thread; waits are bounded."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self.name = name
        self._stream = stream
        self._lines: list[str] = []
        self._events: list[dict[str, Any]] = []
        self._eof = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name=f"reader {name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                line = raw.rstrip("\r\n")
                event = None
                if line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except ValueError:
                        event = None
                with self._changed:
                    self._lines.append(line)
                    if isinstance(event, dict):
                        self._events.append(event)
                    self._changed.notify_all()
        except (OSError, ValueError):  # the stream was closed under us: treat as EOF
            pass
        finally:
            with self._changed:
                self._eof = True
                self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The lines that are JSON objects, parsed, in order."""
        with self._changed:
            return list(self._events)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(
        self, predicate: Callable[[str], Any], timeout: float, *, nth: int = 1
    ) -> str:
        """The `nth` line (since the start) matching `predicate`; AssertionError after
        `timeout` seconds or at end of stream."""
        return self._wait(self._lines, predicate, timeout, "line", nth)

    def wait_for_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, *, nth: int = 1
    ) -> dict[str, Any]:
        """The `nth` JSON object (since the start) matching `predicate`."""
        return self._wait(self._events, predicate, timeout, "event", nth)

    def _wait(
        self,
        items: list[Any],
        predicate: Callable[[Any], bool],
        timeout: float,
        what: str,
        nth: int = 1,
    ) -> Any:
        deadline = time.monotonic() + timeout
        checked = 0
        found = 0
        with self._changed:
            while True:
                for item in items[checked:]:
                    if predicate(item):
                        found += 1
                        if found == nth:
                            return item
                checked = len(items)
                if self._eof:
                    raise AssertionError(
                        f"{self.name} ended without the expected {what}:\n{self._tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching {what} from {self.name} within {timeout} s:\n{self._tail()}"
                    )
                self._changed.wait(remaining)

    def _tail(self, count: int = 60) -> str:
        return "\n".join(f"  | {line}" for line in self._lines[-count:]) or "  (no output)"

    def tail(self, count: int = 60) -> str:
        with self._changed:
            return self._tail(count)

    def close(self, timeout: float = 5.0) -> None:
        """Wait for end of stream (the process is gone), then close the pipe."""
        self._thread.join(timeout)
        self._stream.close()


class ManagedProcess:
    """A child process with stdout and stderr read line by line (see `LineReader`)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cwd: Path = REPO_ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="backslashreplace",
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.stdout = LineReader(self.popen.stdout, f"{name} stdout")
        self.stderr = LineReader(self.popen.stderr, f"{name} stderr")
        self._closed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit status; AssertionError (with the process's output) after `timeout` s."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout} s\n{self.describe()}"
            ) from None

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}, status {self.popen.poll()}):\n"
            f" stdout:\n{self.stdout.tail()}\n stderr:\n{self.stderr.tail()}"
        )

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` s; reap; close the pipes. Idempotent."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if not self._closed:
            self._closed = True
            self.stdout.close()
            self.stderr.close()
        return self.popen.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_peer_csms(
    tmp: Path,
    steps: list[dict[str, Any]] | None,
    *,
    name: str = "csms",
    heartbeat_interval: int = 1,
    timeout: float = 15.0,
    extra_args: Sequence[str] = (),
) -> tuple[ManagedProcess, int]:
    """The independent asyncio CSMS (tests/peers/asyncio_csms.py) on port 0, recording its
    events to `<tmp>/<name>.jsonl` (`extra_args`: its TLS and auth options); returns the
    process and its port."""
    argv = [
        sys.executable,
        "-m",
        "tests.peers.asyncio_csms",
        "--port",
        "0",
        "--heartbeat-interval",
        str(heartbeat_interval),
        "--record",
        str(tmp / f"{name}.jsonl"),
    ]
    if steps is not None:
        script = tmp / f"{name}-script.json"
        script.write_text(json.dumps(steps), encoding="utf-8")
        argv += ["--script", str(script)]
    argv += extra_args
    csms = ManagedProcess(argv, name=name)
    try:
        line = csms.stdout.wait_for_line(lambda s: s.startswith("LISTENING "), timeout)
    except BaseException:
        csms.stop()
        raise
    return csms, int(line.split()[1])


def plc_charger_config(tmp: Path) -> Path:
    """A copy of the shipped charger.json under `tmp` that runs the PLC backend against
    in-process emulated PLCs (`usePLC`, python-can's virtual bus), paths made absolute."""
    source = REPO_ROOT / "configs" / "charger.json"
    document = json.loads(source.read_text(encoding="utf-8"))
    document["chargePoint"].update(usePLC=True, canInterfaceType="virtual", canInterface="bench")
    for key, value in document["security"].items():
        document["security"][key] = str((source.parent / value).resolve())
    paths = document.setdefault("paths", {})
    paths["ocppConfig"] = str(source.parent / paths.get("ocppConfig", "ocpp16-config.json"))
    path = tmp / "charger-plc.json"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def start_charger(
    tmp: Path,
    csms_url: str,
    *,
    name: str = "charger",
    api_port: int | None = None,
    config: Path | None = None,
    log_level: str = "INFO",
) -> ManagedProcess:
    """`python -m dcocpp run` with `config` (default: the shipped configuration), state and
    logs under `tmp`."""
    argv = [
        sys.executable,
        "-m",
        "dcocpp",
        "run",
        "--config",
        str(config) if config is not None else "configs/charger.json",
        "--csms",
        csms_url,
        "--data-dir",
        str(tmp / "data"),
        "--log-dir",
        str(tmp / "logs"),
        "--log-level",
        log_level,
    ]
    if api_port is not None:
        argv += ["--api", f"127.0.0.1:{api_port}"]
    return ManagedProcess(argv, name=name)


# --- the charger's local API, when started with `api_port=0` ----------------------------------

_API_LINE = re.compile(r"local API on http://(?P<host>[^ ]+):(?P<port>\d+)$")
# The API is local: never send it through a proxy from the environment.
_api_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api_port(charger: ManagedProcess, timeout: float) -> int:
    """The port a charger started with `api_port=0` serves its API on (from its log)."""
    line = charger.stderr.wait_for_line(lambda s: _API_LINE.search(s) is not None, timeout)
    found = _API_LINE.search(line)
    assert found is not None
    return int(found["port"])


def api_request(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 5
) -> dict[str, Any]:
    """One JSON request to the charger's API on 127.0.0.1:`port`; AssertionError with the
    answer for an HTTP error status."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with _api_opener.open(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            raise AssertionError(
                f"{method} {path} {body} -> HTTP {error.code}: {error.read()!r}"
            ) from None
    assert isinstance(answer, dict), answer
    return answer


def wait_api_status(
    port: int,
    charger: ManagedProcess,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float,
    *,
    poll: float = 0.05,
) -> dict[str, Any]:
    """The first `GET /api/status` answer for which `predicate` holds; AssertionError (with
    the charger's output) after `timeout` s or when the charger exits."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = api_request(port, "GET", "/api/status")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if predicate(last):
                return last
        if charger.returncode is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"the API never showed {what} within {timeout} s; last answer {last}\n"
                f"{charger.describe()}"
            )
        time.sleep(poll)


def preset_user_keys(tmp: Path, **keys: Any) -> None:
    """OCPP keys for a charger started by `start_charger(tmp, ...)`, as if the central system
    had changed them before (the user overlay in its data directory)."""
    path = tmp / "data" / "ocpp16-user-config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    current.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in keys.items()})
    path.write_text(json.dumps(current), encoding="utf-8")
