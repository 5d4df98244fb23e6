"""The companion DBC for cantools' own tools: every plcId decodes, byte-exact, via the real CLI."""

from __future__ import annotations

import importlib.resources
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cantools
import pytest
from cantools.database.can import Database, Message

from dcocpp.cli import commands as cli
from dcocpp.hardware.plc import crc8, encode, load_database
from dcocpp.hardware.plc.dbctools import (
    build_tools_database,
    tools_message_name,
    write_tools_dbc,
)

PLC_IDS = range(16)
SHIPPED_DBC = importlib.resources.files("dcocpp.hardware.plc").joinpath("dcocpp_plc.dbc")


def _raw_range(message: Message, name: str) -> tuple[int, int]:
    signal = message.get_signal_by_name(name)
    assert signal.minimum is not None and signal.maximum is not None
    return (
        round((signal.minimum - signal.offset) / signal.scale),
        round((signal.maximum - signal.offset) / signal.scale),
    )


def _frames() -> Iterator[tuple[str, int, int, bytes]]:
    """`(message, plcId, id, data)`: every message (each MUX branch) for every plcId.

    Raw values rotate through each signal's DBC minimum, maximum, middle and a seeded random
    value, so signs, scales and the widest fields are all exercised.
    """
    rng = random.Random(0x16F)
    for plc_id in PLC_IDS:
        for message in load_database().messages:
            mux = next((s for s in message.signals if s.is_multiplexer), None)
            branches = [None] if mux is None else sorted(mux.choices or {0: "", 1: ""})
            for branch in branches:
                raw: dict[str, float | int] = {}
                for index, signal in enumerate(message.signals):
                    if signal.name == "CRC8":
                        continue
                    if signal.multiplexer_ids is not None and branch not in signal.multiplexer_ids:
                        continue
                    if signal.is_multiplexer:
                        assert branch is not None
                        raw[signal.name] = int(branch)
                        continue
                    lo, hi = _raw_range(message, signal.name)
                    raw[signal.name] = (lo, hi, (lo + hi) // 2, rng.randint(lo, hi))[
                        (plc_id + index) % 4
                    ]
                can_id, data = encode(message.name, plc_id, raw, scaling=False)
                yield message.name, plc_id, can_id, data


FRAMES = list(_frames())


def _candump_line(fmt: str, index: int, can_id: int, data: bytes) -> str:
    """One frame as candump prints an extended frame (8 hex digits) in the format `fmt`."""
    spaced = " ".join(f"{byte:02X}" for byte in data)
    if fmt == "candump":  # candump can0
        return f"  can0  {can_id:08X}   [8]  {spaced}"
    if fmt == "candump -ta":
        return f" (1700000000.{index:06d})  can0  {can_id:08X}   [8]  {spaced}"
    assert fmt == "candump -L"
    return f"(1700000000.{index:06d}) can0 {can_id:08X}#{data.hex().upper()}"


def _cantools_decode(dbc: Path, lines: list[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cantools", "decode", "-s", "--no-decode-choices", str(dbc)],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    output = result.stdout.splitlines()
    assert len(output) == len(lines), result.stdout + result.stderr
    return output


def _parse_single_line(decoded: str) -> tuple[str, dict[str, float | int]]:
    """`RelayStatus_3(RLY1_STATE: 1, VOLTAGE_0p1V: 812.3 V, ...)` -> name and values."""
    name, _, rest = decoded.strip().partition("(")
    assert rest.endswith(")"), decoded
    values: dict[str, float | int] = {}
    for item in rest[:-1].split(", "):
        signal, _, value = item.partition(": ")
        number = value.split(" ")[0]  # drop the unit
        values[signal] = int(number) if number.lstrip("-").isdigit() else float(number)
    return name, values


@pytest.fixture
def tools_dbc(tmp_path: Path) -> Path:
    path = tmp_path / "dcocpp_plc_decode.dbc"
    write_tools_dbc(path)
    return path


@pytest.mark.parametrize("fmt", ["candump", "candump -ta", "candump -L"])
def test_cantools_decode_cli_decodes_every_plc_id_byte_exact(tools_dbc: Path, fmt: str) -> None:
    lines = [_candump_line(fmt, i, can_id, data) for i, (_, _, can_id, data) in enumerate(FRAMES)]
    output = _cantools_decode(tools_dbc, lines)
    shipped = load_database()
    seen: set[tuple[str, int]] = set()
    for line, printed, (message_name, plc_id, _, data) in zip(lines, output, FRAMES, strict=True):
        assert printed.startswith(line + " ::"), printed
        decoded = printed[len(line) + len(" ::") :]
        assert "Unknown frame id" not in decoded, printed
        name, values = _parse_single_line(decoded)
        assert name == tools_message_name(message_name, plc_id)
        # The CRC-bearing byte 7 decodes as the signal CRC8 (cantools shows it, never checks it).
        assert data[7] == crc8(data[:7])
        assert values["CRC8"] == data[7]
        # Byte-exact: cantools' printed physical values re-encode to the very bytes on the bus.
        message = shipped.get_message_by_name(message_name)
        assert message.encode(values, scaling=True, strict=True) == data, printed
        seen.add((message_name, plc_id))
    assert seen == {(m.name, plc_id) for m in shipped.messages for plc_id in PLC_IDS}


def test_cantools_decode_cli_shows_choices(tools_dbc: Path) -> None:
    can_id, data = encode(
        "RelayStatus",
        9,
        {
            "RLY1_STATE": 0,
            "RLY1_FEEDBACK": 0,
            "SAFETY_OK": 0,
            "EARTH_FAULT": 0,
            "ESTOP_INPUT": 1,
            "COMM_FAULT": 0,
            "FORCE_OFF_ACTIVE": 0,
            "SW_STATES": 1,
            "FAULT_REASON": 4,
            "LAST_CMD_SEQ_APPLIED": 200,
        },
    )
    line = _candump_line("candump -L", 0, can_id, data)
    result = subprocess.run(
        [sys.executable, "-m", "cantools", "decode", "--single-line", str(tools_dbc)],
        input=line + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.startswith(f"{line} :: RelayStatus_9(")
    assert "FAULT_REASON: ESTOP" in result.stdout
    assert "LAST_CMD_SEQ_APPLIED: 200" in result.stdout
    assert f"CRC8: {data[7]}" in result.stdout


def test_shipped_dbc_is_unknown_to_cantools_decode() -> None:
    """The reason for the companion DBC (cantools 45.1): if this fails, cantools now honours the
    extended flag of ids below 0x800 in `decode`; update docs/can-bus.md and the PLC README."""
    _, plc_id, can_id, data = FRAMES[0]
    assert plc_id == 0  # a base id, known to the shipped DBC
    line = _candump_line("candump -L", 0, can_id, data)
    with importlib.resources.as_file(SHIPPED_DBC) as path:
        [printed] = _cantools_decode(path, [line])
    assert printed == f"{line} :: Unknown frame id {can_id} ({can_id:#x})"


def test_extended_variant_matches_like_cantools_monitor() -> None:
    """`cantools monitor` looks up `get_message_by_frame_id(arbitration_id, is_extended_id)`."""
    db = build_tools_database(extended_ids=True)
    for message_name, plc_id, can_id, data in FRAMES:
        message = db.get_message_by_frame_id(can_id, True)
        assert message.name == tools_message_name(message_name, plc_id)
        assert message.is_extended_frame
        values = message.decode(data, decode_choices=False)
        assert load_database().get_message_by_name(message_name).encode(values) == data
    # and, like `cantools decode`, without the flag nothing of ours is found
    with pytest.raises(KeyError):
        db.get_message_by_frame_id(0x163)


def test_generated_layouts_equal_the_shipped_ones(tmp_path: Path) -> None:
    shipped = load_database()
    before = [(m.name, m.frame_id, m.is_extended_frame) for m in shipped.messages]
    for extended in (False, True):
        path = tmp_path / f"tools_{extended}.dbc"
        write_tools_dbc(path, extended_ids=extended)
        db = cantools.database.load_file(str(path), strict=True)
        assert isinstance(db, Database)
        assert len(db.messages) == 16 * len(shipped.messages)
        assert db.dbc is not None and db.dbc.attributes["Baudrate"].value == 125000
        for base in shipped.messages:
            for plc_id in PLC_IDS:
                copy = db.get_message_by_name(tools_message_name(base.name, plc_id))
                assert copy.frame_id == base.frame_id | plc_id
                assert copy.is_extended_frame is extended
                assert copy.length == base.length
                assert copy.senders == base.senders
                assert copy.comment == base.comment
                assert sorted(map(_layout, copy.signals), key=str) == sorted(
                    map(_layout, base.signals), key=str
                )
    # the codec's cached database is untouched
    assert [(m.name, m.frame_id, m.is_extended_frame) for m in shipped.messages] == before


def _layout(signal: cantools.database.can.Signal) -> tuple[object, ...]:
    return (
        signal.name,
        signal.start,
        signal.length,
        signal.byte_order,
        signal.is_signed,
        signal.scale,
        signal.offset,
        signal.minimum,
        signal.maximum,
        signal.unit,
        signal.is_multiplexer,
        signal.multiplexer_ids,
        dict(signal.choices or {}),
        signal.comment,
    )


def test_plc_dbc_command_writes_both_variants(tmp_path: Path) -> None:
    assert cli.main(["plc-dbc", str(tmp_path / "decode.dbc")]) == 0
    assert cli.main(["plc-dbc", "--extended-ids", str(tmp_path / "monitor.dbc")]) == 0
    assert cli.main(["plc-dbc", str(tmp_path / "missing" / "x.dbc")]) == cli.EXIT_RUNTIME_ERROR
    decode_db = cantools.database.load_file(str(tmp_path / "decode.dbc"))
    monitor_db = cantools.database.load_file(str(tmp_path / "monitor.dbc"))
    assert isinstance(decode_db, Database) and isinstance(monitor_db, Database)
    assert decode_db.get_message_by_frame_id(0x16F).name == "RelayStatus_15"
    assert monitor_db.get_message_by_frame_id(0x16F, True).name == "RelayStatus_15"
