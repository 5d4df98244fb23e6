"""The install of a downloaded firmware file: the integrator's hook, or the built-in installer.

The hook (charger.json `firmware.installCommand`) is run with the file's absolute path and the
expected version (the image header's, else "") appended, and both in its environment
(DCOCPP_FIRMWARE_FILE, DCOCPP_FIRMWARE_VERSION). Exit status 0 is Installed; any other, a hook
that cannot be started or one past its time limit (its whole process group is killed) is
InstallationFailed. Its last output lines are logged. The hook must not reboot the machine:
dcocpp does once the install is recorded.

The built-in installer (no hook) installs dcocpp's simulated firmware: an image is a file whose
first line is `DCOCPP-FIRMWARE <version>` (1 to 50 printable ASCII characters without spaces,
OCPP's CiString50 of BootNotification's firmwareVersion). Installing it records the version,
which the station does in the same database write as the plan's phase: nothing half-done.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import re
import signal
import subprocess
from pathlib import Path

import attrs
import trio

log = logging.getLogger(__name__)

MAGIC = b"DCOCPP-FIRMWARE "
_VERSION = re.compile(rb"[\x21-\x7e]{1,50}")
_HEADER_MAX = len(MAGIC) + 51
DEFAULT_INSTALL_TIMEOUT = 600.0
# Lines of the hook's output logged when it ends.
OUTPUT_LINES = 20


@attrs.frozen
class InstallHook:
    command: tuple[str, ...]
    timeout: float = DEFAULT_INSTALL_TIMEOUT


@attrs.frozen
class Outcome:
    """An install's result: `error` None when installed; the version to record, if any."""

    version: str | None
    error: str | None = None


def image_version(path: Path) -> str | None:
    """The version in a dcocpp image's header line; None when the file is none."""
    with open(path, "rb") as file:
        head = file.read(_HEADER_MAX + 1)
    line, newline, _ = head.partition(b"\n")
    if not newline or not line.startswith(MAGIC):
        return None
    version = line[len(MAGIC) :]
    return version.decode("ascii") if _VERSION.fullmatch(version) else None


async def install(path: Path, hook: InstallHook | None) -> Outcome:
    """Install the firmware file `path` (see the module docstring)."""
    try:
        version = await trio.to_thread.run_sync(image_version, path)
    except OSError as exc:
        return Outcome(None, f"{path}: cannot read: {exc.strerror or exc}")
    if hook is None:
        if version is None:
            return Outcome(None, f"{path.name} is not a firmware image (no DCOCPP-FIRMWARE line)")
        return Outcome(version)
    error = await _run_hook(hook, path, version or "")
    return Outcome(version, error)


async def _run_hook(hook: InstallHook, path: Path, version: str) -> str | None:
    """The hook's failure in words, None when it exited with 0."""
    argv = [*hook.command, str(path), version]
    env = {**os.environ, "DCOCPP_FIRMWARE_FILE": str(path), "DCOCPP_FIRMWARE_VERSION": version}
    output = hook_output(path)
    log.info("firmware install: running %s", " ".join(argv))
    try:
        # A file, not a pipe: its tail is there even after a kill.
        sink = await trio.to_thread.run_sync(functools.partial(open, output, "wb"))
        with sink:
            with trio.move_on_after(hook.timeout) as deadline:
                process = await trio.run_process(
                    argv,
                    check=False,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as a whole
                    deliver_cancel=_kill_group,
                )
    except OSError as exc:
        output.unlink(missing_ok=True)
        return f"install command {hook.command[0]} cannot be started: {exc.strerror or exc}"
    tail = await trio.to_thread.run_sync(_tail, output)
    error = None
    if deadline.cancelled_caught:
        error = f"install command killed after its time limit of {hook.timeout:g} s"
    elif process.returncode != 0:
        error = f"install command exited with status {process.returncode}"
    if tail:
        level = logging.INFO if error is None else logging.WARNING
        log.log(level, "firmware install command output (last lines):\n%s", tail)
    return error


def hook_output(path: Path) -> Path:
    """Where the hook's output goes while it runs (beside the file it installs)."""
    return path.with_name(path.name + ".log")


async def _kill_group(process: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(process.pid, signal.SIGKILL)


def _tail(output: Path) -> str:
    try:
        with open(output, "rb") as file:
            lines = collections.deque(file, maxlen=OUTPUT_LINES)
    except OSError:
        return ""
    finally:
        output.unlink(missing_ok=True)
    return b"".join(lines).decode("utf-8", "replace").rstrip()
