"""OCPP-J RPC round trips per second, charge point side: dcocpp vs the `ocpp` package's asyncio.

    .venv/bin/python bench/rpc_roundtrip.py [--count N] [--repeat R] [--profile] [--breakdown]

The central system is tests/peers/asyncio_csms.py, started once as its own process (port 0,
`--heartbeat-interval 3600`, no script) and used by every charge point in turn. Each charge point
runs in a child process of this script (`--child dcocpp|asyncio`), so that `time.process_time()`
there is the charge point's CPU alone (all its threads: dcocpp's message-log writer, the
package's validation executor). A child sends one BootNotification, 200 (`--warmup`) untimed
calls of each type, then `--count` Heartbeat and `--count` MeterValues CALLs (one meterValue,
four sampledValues), strictly one after the other as OCPP-J requires, each built, validated,
sent and its answer validated as an application would. There are `--repeat` rounds, one child
per implementation and round, the implementations interleaved.

  dcocpp   `transport.run_client` + `rpc.RpcConnection` (schema validation on, the default), its
           message log enabled as in production (`LoggingSetup().start("WARNING", <tmp dir>,
           console=False)`: every frame goes through the "dcocpp.messages" logger to a file).
  asyncio  `ocpp.v16.ChargePoint` on a `websockets.asyncio.client.connect(...,
           subprotocols=["ocpp1.6"])` connection, all defaults (the package's validation on, in
           its executor; websockets' permessage-deflate on, `--asyncio-no-deflate` turns it off),
           logging not configured (the package's per-frame INFO lines are dropped at WARNING).

Prints, per message type and implementation, the MEDIAN over the rounds of calls/s and of the
charge point's CPU-ms per call (and the central system's CPU per call), then the dcocpp/asyncio
ratios against the targets (calls/s >= 1.5, CPU per call <= 0.5) with PASS/FAIL. `--breakdown`
adds dcocpp rows without the message log and without schema validation; `--profile` runs the
dcocpp child once more under cProfile (CPU time) for the MeterValues round and prints the top 15
cumulative entries in dcocpp, trio_websocket, wsproto and jsonschema. Exit status 0, or 1 with
`--check` when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from ocpp.v16 import call, datatypes
from ocpp.v16.enums import Measurand, ReadingContext, UnitOfMeasure

from dcocpp.clock import ocpp_time

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATE_RATIO = 1.5  # dcocpp calls/s / asyncio calls/s, at least
TARGET_CPU_RATIO = 0.5  # dcocpp CPU per call / asyncio CPU per call, at most
CHILD_TIMEOUT = 300.0
MEASURANDS = [
    (Measurand.energy_active_import_register, UnitOfMeasure.wh, "1234567.8"),
    (Measurand.power_active_import, UnitOfMeasure.w, "74850.0"),
    (Measurand.current_import, UnitOfMeasure.a, "182.4"),
    (Measurand.voltage, UnitOfMeasure.v, "410.3"),
]
PROFILE_FILTER = "dcocpp|trio_websocket|wsproto|jsonschema"


# --- the message sequence (the same for both implementations) ----------------------------------


def utc_now() -> str:
    return ocpp_time(datetime.now(UTC))


def boot_notification() -> call.BootNotification:
    return call.BootNotification(
        charge_point_vendor="dcocpp", charge_point_model="DC-2G-150", firmware_version="0.1.0"
    )


def heartbeat() -> call.Heartbeat:
    return call.Heartbeat()


def meter_values() -> call.MeterValues:
    return call.MeterValues(
        connector_id=1,
        meter_value=[
            datatypes.MeterValue(
                timestamp=utc_now(),
                sampled_value=[
                    datatypes.SampledValue(
                        value=value,
                        context=ReadingContext.sample_periodic,
                        unit=unit,
                        measurand=measurand,
                    )
                    for measurand, unit, value in MEASURANDS
                ],
            )
        ],
    )


MESSAGES: list[tuple[str, Callable[[], Any]]] = [
    ("Heartbeat", heartbeat),
    ("MeterValues", meter_values),
]

Send = Callable[[Any], Awaitable[Any]]


async def exercise(
    send: Send, count: int, repeat: int, warmup: int, profiler: cProfile.Profile | None
) -> dict[str, list[dict[str, float]]]:
    """Runs under trio or asyncio alike: it awaits nothing but `send`."""
    boot = await send(boot_notification())
    if getattr(boot, "status", None) != "Accepted":
        raise RuntimeError(f"BootNotification not accepted: {boot!r}")
    for _, make in MESSAGES:
        for _ in range(warmup):
            await send(make())
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in MESSAGES}
    for _ in range(repeat):
        for name, make in MESSAGES:
            # BENCH_PROFILE=Heartbeat profiles the Heartbeat rounds instead.
            profile = profiler if name == os.environ.get("BENCH_PROFILE", "MeterValues") else None
            wall, cpu = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            for _ in range(count):
                await send(make())
            if profile is not None:
                profile.disable()
            results[name].append(
                {
                    "n": count,
                    "wall": time.perf_counter() - wall,
                    "cpu": time.process_time() - cpu,
                }
            )
    # A last answer checked for content: the CSMS really answered MeterValues.
    answer = await send(meter_values())
    if type(answer).__name__ != "MeterValues":
        raise RuntimeError(f"unexpected MeterValues answer {answer!r}")
    return results


# --- the charge point children -----------------------------------------------------------------


class _NoHandlers:
    """The central system sends no CALLs in this benchmark."""


def child_dcocpp(args: argparse.Namespace, profiler: cProfile.Profile | None) -> dict[str, Any]:
    import trio

    from dcocpp.cli.logs import LoggingSetup
    from dcocpp.ocpp import transport
    from dcocpp.ocpp.messagelog import MessageLog
    from dcocpp.ocpp.rpc import RpcConnection

    async def main() -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            ws = await nursery.start(
                partial(transport.run_client, args.url, charge_point_id="BENCH-DCOCPP")
            )
            rpc = RpcConnection(
                ws,
                _NoHandlers(),
                message_log=MessageLog("csms"),
                validate=not args.no_validation,
            )
            nursery.start_soon(rpc.run)
            results = await exercise(rpc.call, args.count, args.repeat, args.warmup, profiler)
            await rpc.aclose()  # a polite close while the reader still runs
            nursery.cancel_scope.cancel()
        return results

    with tempfile.TemporaryDirectory(prefix="bench-dcocpp-logs-") as log_dir:
        logging_setup = LoggingSetup()
        # log_dir None disables the message log (only for the --breakdown variant).
        logging_setup.start(
            "WARNING", None if args.no_message_log else Path(log_dir), console=False
        )
        try:
            results = trio.run(main)
        finally:
            logging_setup.stop()
        log_bytes = sum(p.stat().st_size for p in Path(log_dir).iterdir())
    return {"results": results, "message_log_bytes": log_bytes}


def child_asyncio(args: argparse.Namespace, profiler: cProfile.Profile | None) -> dict[str, Any]:
    from ocpp.v16 import ChargePoint
    from websockets.asyncio.client import connect

    async def main() -> dict[str, Any]:
        options: dict[str, Any] = {"subprotocols": ["ocpp1.6"]}
        if args.asyncio_no_deflate:
            options["compression"] = None
        async with connect(f"{args.url}/BENCH-ASYNCIO", **options) as ws:
            if ws.subprotocol != "ocpp1.6":
                raise RuntimeError(f"subprotocol {ws.subprotocol!r}")
            cp = ChargePoint("BENCH-ASYNCIO", ws)
            reader = asyncio.create_task(cp.start())
            try:
                return await exercise(cp.call, args.count, args.repeat, args.warmup, profiler)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    return {"results": asyncio.run(main()), "deflate": not args.asyncio_no_deflate}


def run_child(args: argparse.Namespace) -> int:
    # CPU time of this thread, not wall time: waiting for the CSMS is not our cost.
    profiler = cProfile.Profile(time.thread_time) if args.profile_out else None
    child = child_dcocpp if args.child == "dcocpp" else child_asyncio
    report = child(args, profiler)
    if profiler is not None:
        profiler.dump_stats(args.profile_out)
    print(json.dumps(report))
    return 0


# --- the parent --------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Csms:
    """tests/peers/asyncio_csms.py as a child process; its stdout (an event line per CALL) goes
    to a file so that nobody has to keep draining a pipe."""

    def __init__(self, work: Path) -> None:
        self.stdout_path = work / "csms.stdout"
        self.stderr_path = work / "csms.stderr"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.peers.asyncio_csms",
                    "--port",
                    "0",
                    "--heartbeat-interval",
                    "3600",
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.port = self._wait_listening(10.0)

    def _wait_listening(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text()
            if text.startswith("LISTENING ") and "\n" in text:
                return int(text.split("\n", 1)[0].split()[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the CSMS did not start:\n{self.stderr_path.read_text()}")

    def cpu(self) -> float | None:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_child(
    impl: str,
    csms: Csms,
    args: argparse.Namespace,
    *,
    extra: tuple[str, ...] = (),
    profile_out: Path | None = None,
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        impl,
        "--url",
        f"ws://127.0.0.1:{csms.port}/ocpp",
        "--count",
        str(args.count),
        "--repeat",
        str(args.repeat),
        "--warmup",
        str(args.warmup),
    ]
    if args.asyncio_no_deflate:
        argv.append("--asyncio-no-deflate")
    argv += extra
    if profile_out is not None:
        argv += ["--profile-out", str(profile_out)]
    cpu_before = csms.cpu()
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    cpu_after = csms.cpu()
    if done.returncode != 0:
        raise RuntimeError(f"{impl} child failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # BootNotification, the warm-up, the timed rounds and the final check.
    timed = sum(r["n"] for rounds in report["results"].values() for r in rounds)
    calls = 1 + len(MESSAGES) * args.warmup + timed + 1
    if cpu_before is not None and cpu_after is not None:
        report["csms_cpu_ms_per_call"] = (cpu_after - cpu_before) * 1000 / calls
    return report


def summarize(reports: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median over all rounds of all runs, per message type."""
    out = {}
    for name, _ in MESSAGES:
        rounds = [r for report in reports for r in report["results"][name]]
        out[name] = {
            "rate": statistics.median(r["n"] / r["wall"] for r in rounds),
            "cpu_ms": statistics.median(r["cpu"] * 1000 / r["n"] for r in rounds),
        }
    csms = [r["csms_cpu_ms_per_call"] for r in reports if "csms_cpu_ms_per_call" in r]
    out["csms"] = {"cpu_ms": statistics.median(csms) if csms else float("nan")}
    return out


def profile_report(path: Path, limit: int = 15) -> str:
    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(PROFILE_FILTER, limit)
    lines = text.getvalue().splitlines()
    # Drop pstats' preamble up to the column header.
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    out = [
        "cProfile (CPU time of the main thread), dcocpp child, "
        f"{os.environ.get('BENCH_PROFILE', 'MeterValues')} round: "
        f"top {limit} cumulative in {PROFILE_FILTER}"
    ]
    for line in lines[start:]:
        if line.strip():
            out.append("  " + line.replace(str(REPO_ROOT) + "/", "").replace(sys.prefix + "/", ""))
    return "\n".join(out)


# label -> (child implementation, extra child arguments); the first two are compared.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dcocpp": ("dcocpp", ()),
    "asyncio": ("asyncio", ()),
}
BREAKDOWN: dict[str, tuple[str, tuple[str, ...]]] = {
    "dcocpp -msglog": ("dcocpp", ("--no-message-log",)),
    "dcocpp -valid.": ("dcocpp", ("--no-validation",)),
}


def run_parent(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    variants = {**VARIANTS, **(BREAKDOWN if args.breakdown else {})}
    reports: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    child_args = argparse.Namespace(**{**vars(args), "repeat": 1})
    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
        work = Path(tmp)
        csms = Csms(work)
        try:
            # One child per round, the implementations interleaved, so that a load change on
            # the machine (other processes) hits both alike.
            for _ in range(args.repeat):
                for label, (impl, extra) in variants.items():
                    reports[label].append(spawn_child(impl, csms, child_args, extra=extra))
            profile = ""
            if args.profile:
                profile_path = work / "dcocpp-metervalues.prof"
                spawn_child("dcocpp", csms, child_args, profile_out=profile_path)
                profile = profile_report(profile_path)
        finally:
            csms.stop()
    summaries = {label: summarize(runs) for label, runs in reports.items()}
    deflate = "on" if not args.asyncio_no_deflate else "off"
    print(
        f"OCPP-J round trips over loopback against tests/peers/asyncio_csms.py\n"
        f"{args.count} sequential calls per message type and round, {args.repeat} rounds (one "
        f"child process each, after {args.warmup} warm-up calls per type);\n"
        f"MEDIAN of the rounds; CPU = the charge point process only (all its threads);\n"
        f"asyncio client: websockets permessage-deflate {deflate}\n"
    )
    header = (
        f"{'message':<12} {'implementation':<15} {'calls/s':>9} {'CPU ms/call':>12} "
        f"{'CSMS CPU ms/call*':>18}"
    )
    print(header)
    print("-" * len(header))
    for name, _ in MESSAGES:
        for label in variants:
            summary = summaries[label]
            print(
                f"{name:<12} {label:<15} {summary[name]['rate']:>9.0f} "
                f"{summary[name]['cpu_ms']:>12.3f} {summary['csms']['cpu_ms']:>18.3f}"
            )
    print("* the central system process per call, over a whole child run (both message types)")
    print(
        f"\ndcocpp / asyncio (targets: calls/s >= {TARGET_RATE_RATIO}, "
        f"CPU per call <= {TARGET_CPU_RATIO})"
    )
    passed = True
    for name, _ in MESSAGES:
        ours, theirs = summaries["dcocpp"][name], summaries["asyncio"][name]
        rate, cpu = ours["rate"] / theirs["rate"], ours["cpu_ms"] / theirs["cpu_ms"]
        rate_ok, cpu_ok = rate >= TARGET_RATE_RATIO, cpu <= TARGET_CPU_RATIO
        passed = passed and rate_ok and cpu_ok
        print(
            f"{name:<12} calls/s x{rate:.2f} {'PASS' if rate_ok else 'FAIL':<5}  "
            f"CPU per call x{cpu:.2f} {'PASS' if cpu_ok else 'FAIL'}"
        )
    print(f"overall: {'PASS' if passed else 'FAIL'}")
    if profile:
        print(f"\n{profile}")
    print(f"\n(wall time {time.perf_counter() - started:.1f} s)")
    return 1 if args.check and not passed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="OCPP-J RPC round trips: dcocpp vs the ocpp package's asyncio ChargePoint"
    )
    parser.add_argument("--count", type=int, default=3000, help="calls per round and type")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per type first")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the dcocpp child's MeterValues rounds (cProfile) and print the top "
        "15 cumulative entries",
    )
    parser.add_argument(
        "--asyncio-no-deflate",
        action="store_true",
        help="turn off websockets' default permessage-deflate on the asyncio client",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also run dcocpp without its message log and without schema validation "
        "(extra rows, not part of the comparison)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    # Internal: run one charge point.
    parser.add_argument("--child", choices=["dcocpp", "asyncio"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--no-message-log", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-validation", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
