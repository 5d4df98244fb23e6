"""`dcocpp sim ...` and `dcocpp status`: talk to a running charger's local API.

Through `dcocpp.api.client` (plain standard-library HTTP) so that they run anywhere the charger
does. Exit status: 0 on success, 1 when the API cannot be reached or fails, 2 when it refuses
the request (unknown connector, an action that does not fit the gun's state, ...) or the
arguments are bad.
`sim authorize` prints what the charger decided about the tag: 0 when the gun took it (a
session for it, or the transaction stopped), 2 when it refused it (at the reader, or the
authorization: Invalid, Blocked, Expired, ConcurrentTx), 1 when no decision came in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from dcocpp.api import client
from dcocpp.api.contract import DEFAULT_API, FAULT_KINDS, TOKEN_ENV, parse_address, token_problem

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_REFUSED = 2


class _Failure(Exception):
    """A request that did not succeed: what to print and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- argument parsing ------------------------------------------------------------------------


def add_subcommands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sim` and `status` on the program's subcommands; each sets `func`."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--api",
        type=address_argument,
        default=DEFAULT_API,
        metavar="HOST:PORT",
        help=f"address of the charger's local API (default: {DEFAULT_API})",
    )
    api_token_argument(api, "sent as Authorization: Bearer")

    sim = commands.add_parser(
        "sim",
        help="drive the simulated hardware of a running charger",
        description="Drive the simulator through the charger's local API: plug or unplug a "
        "gun, present an RFID tag, suspend or resume the EV, raise or clear a fault. Prints the "
        "connector's state afterwards.",
    )
    actions = sim.add_subparsers(dest="action", required=True, metavar="ACTION")

    plug = actions.add_parser(
        "plug", parents=[api], help="plug the gun into the EV", description="Plug the gun in."
    )
    _connector_argument(plug)
    plug.set_defaults(func=_plug)

    unplug = actions.add_parser(
        "unplug", parents=[api], help="unplug the gun", description="Unplug the gun."
    )
    _connector_argument(unplug)
    unplug.set_defaults(func=_unplug)

    authorize = actions.add_parser(
        "authorize",
        parents=[api],
        help="present an RFID tag at the gun's reader",
        description="Present an id tag (1 to 20 characters) at the gun's reader and print what "
        "the charger decided: Accepted, Invalid, Blocked, Expired, ConcurrentTx (and who "
        "decided), or why the reader refused it. Exit status 0 when the gun took the tag (a "
        "session for it, or the running transaction stopped), 2 when it was refused, 1 when no "
        "decision came in time.",
    )
    _connector_argument(authorize)
    authorize.add_argument("id_tag", metavar="TAG", help="the id tag")
    authorize.set_defaults(func=_authorize)

    ev = actions.add_parser(
        "ev",
        parents=[api],
        help="suspend or resume charging on the EV's side",
        description="Make the simulated EV suspend or resume drawing power.",
    )
    _connector_argument(ev)
    ev.add_argument(
        "ev_action",
        choices=["suspend", "resume"],
        metavar="suspend|resume",
        help="stop or resume drawing power (the EV side of a pause)",
    )
    ev.set_defaults(func=_ev)

    fault = actions.add_parser(
        "fault",
        parents=[api],
        help="raise or clear a simulated fault",
        description=f"Raise (on) or clear (off) a simulated fault: {', '.join(FAULT_KINDS)}.",
    )
    _connector_argument(fault)
    fault.add_argument("kind", choices=FAULT_KINDS, metavar="|".join(FAULT_KINDS), help="the fault")
    fault.add_argument(
        "state", choices=["on", "off"], metavar="on|off", help="raise (on) or clear (off) it"
    )
    fault.set_defaults(func=_fault)

    status = commands.add_parser(
        "status",
        parents=[api],
        help="show the charge point and every connector",
        description="Show the state of a running charger: its central system connection and "
        "every connector (status, transaction, relay, power, energy, ...).",
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=_status)


def api_token_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--api-token",
        metavar="TOKEN",
        help=f"the local API's token, {what} (default: ${TOKEN_ENV}, preferred: "
        "a command line is visible to every user in ps)",
    )


def api_token(args: argparse.Namespace) -> str | None:
    """The API token: --api-token, else the environment's TOKEN_ENV; None when neither is set
    (an empty one counts as not set)."""
    token: str | None = args.api_token
    return (token if token is not None else os.environ.get(TOKEN_ENV)) or None


def address_argument(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _connector_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("connector", type=int, metavar="CONNECTOR", help="connector id (1..N)")


# --- the commands ----------------------------------------------------------------------------


def _plug(args: argparse.Namespace) -> int:
    return _act(args, "plug", None)


def _unplug(args: argparse.Namespace) -> int:
    return _act(args, "unplug", None)


def _authorize(args: argparse.Namespace) -> int:
    try:
        answer = _request(
            args.api,
            "POST",
            f"/api/connectors/{args.connector}/authorize",
            {"idTag": args.id_tag},
            _token(args),
        )
    except _Failure as failure:
        print(failure.message, file=sys.stderr)
        return failure.status
    decision = answer.get("authorization")
    if isinstance(decision, dict):
        print(describe_authorization(decision))
    print(describe_connector(answer["connector"]))
    if not isinstance(decision, dict) or decision["taken"]:
        return EXIT_OK
    return EXIT_UNREACHABLE if decision["status"] is None else EXIT_REFUSED


def _ev(args: argparse.Namespace) -> int:
    return _act(args, "ev", {"suspended": args.ev_action == "suspend"})


def _fault(args: argparse.Namespace) -> int:
    return _act(args, f"faults/{args.kind}", {"active": args.state == "on"})


def _act(args: argparse.Namespace, action: str, body: dict[str, Any] | None) -> int:
    try:
        answer = _request(
            args.api, "POST", f"/api/connectors/{args.connector}/{action}", body, _token(args)
        )
    except _Failure as failure:
        print(failure.message, file=sys.stderr)
        return failure.status
    print(describe_connector(answer["connector"]))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    try:
        snapshot = _request(args.api, "GET", "/api/status", None, _token(args))
    except _Failure as failure:
        print(failure.message, file=sys.stderr)
        return failure.status
    if args.json:
        print(json.dumps(snapshot, indent=2))
    else:
        print(format_status(snapshot))
    return EXIT_OK


# --- HTTP ------------------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str | None:
    """The token to send; `_Failure` for one no charger can have (and HTTP cannot carry)."""
    token = api_token(args)
    if token is None:
        return None
    problem = token_problem(token)
    if problem is not None:
        source = "--api-token" if args.api_token is not None else TOKEN_ENV
        raise _Failure(f"{source}: the API token {problem}", EXIT_REFUSED)
    return token


def _request(
    api: tuple[str, int],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    token: str | None = None,
) -> dict[str, Any]:
    """`client.request`, its failure as what to print and the exit status."""
    try:
        return client.request(api, method, path, body, token)
    except client.ApiClientError as error:
        raise _Failure(error.message, EXIT_REFUSED if error.refused else EXIT_UNREACHABLE) from None


# --- output ----------------------------------------------------------------------------------

_COLUMNS = (
    "id",
    "status",
    "errorCode",
    "transactionId",
    "idTag",
    "plugged",
    "relay",
    "kW",
    "kWh",
    "A",
    "V",
    "SoC",
)


def _upload_line(what: str, status: str, upload: dict[str, Any]) -> str:
    """The last GetDiagnostics (GetLog) upload: what, where, how far, which attempt, when the
    next."""
    total = upload["bytes_total"]
    size = f"{upload['bytes_done']}/{total if total is not None else '?'} bytes"
    line = (
        f"{what} {upload['file_name']} to {upload['location']}: {status}, {size}, "
        f"attempt {upload['attempt']} of {upload['attempts']}"
    )
    if upload["next_attempt_at"] and status == "Uploading":
        line += f", waiting: next attempt at {upload['next_attempt_at']}"
    if upload["error"]:
        line += f" (last error: {upload['error']})"
    return line


def _firmware_line(firmware: dict[str, Any]) -> str:
    """The firmware running, and the update under way (or the last one): from where, which
    step, how far, which attempt, when the next, its last error."""
    line = f"firmware {firmware['version']}"
    update = firmware.get("update")
    if not update:
        return line
    total = update["bytesTotal"]
    percent = f" ({update['percent']:g}%)" if update["percent"] is not None else ""
    size = f"{update['bytesDone']}/{total if total is not None else '?'} bytes{percent}"
    line += (
        f", update {update['fileName']} from {update['location']}: {firmware['status']},"
        f" {update['phase']}, {size}, attempt {update['attempt']} of {update['attempts']}"
    )
    if update["nextAttemptAt"] and update["phase"] in ("scheduled", "downloading"):
        line += f", waiting: next attempt at {update['nextAttemptAt']}"
    if update["error"]:
        line += f" (last error: {update['error']})"
    return line


def format_status(snapshot: dict[str, Any]) -> str:
    """The `status` table: one line for the charge point (and, when there is one, one for the
    last failed connection to the central system), one row per connector, then one line per
    active fault."""
    cp = snapshot["chargePoint"]
    link = "connected" if cp["connected"] else "not connected"
    head = f"charge point {cp['id']}: {link}, registration {cp['registration']}"
    outbox = cp.get("outbox") or {}
    if outbox.get("queued"):
        head += f", {outbox['queued']} transaction message(s) queued"
        if outbox.get("parked"):
            head += f" ({outbox['parked']} PARKED: refused by the central system)"
    lines = [head]
    failure = cp.get("lastConnectionFailure")
    if failure:
        lines.append(
            f"last connection failure {failure['at']} ({failure['attempts']} failure(s) since "
            f"{failure['since']}), {failure['url']}: {failure['reason']}"
        )
    for key, what in (("diagnostics", "diagnostics"), ("logs", "log")):
        upload = (cp.get(key) or {}).get("upload")
        if upload:
            lines.append(_upload_line(what, cp[key]["status"], upload))
    if cp.get("firmware"):
        lines.append(_firmware_line(cp["firmware"]))
    counters = cp.get("hardware") or {}
    if counters:
        # The PLC backend's CAN bus counters: errors here explain a gun's COMMUNICATION fault.
        lines.append(
            "hardware: " + ", ".join(f"{name} {value}" for name, value in counters.items())
        )
    lines.append("")
    rows = [list(_COLUMNS)] + [_row(c) for c in snapshot["connectors"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    numeric = {"id", "transactionId", "kW", "kWh", "A", "V", "SoC"}
    for row in rows:
        cells = [
            cell.rjust(width) if name in numeric else cell.ljust(width)
            for name, cell, width in zip(_COLUMNS, row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    for connector in snapshot["connectors"]:
        for fault in connector.get("faults") or ():
            lines.append(f"connector {connector['id']}: fault {describe_fault(fault)}")
    return "\n".join(lines)


def describe_fault(fault: dict[str, Any]) -> str:
    """`estop (OtherError, EmergencyStop): <detail>`: what the central system was told, and
    the detail it may not have been (a communication fault's detail is its vendorErrorCode)."""
    codes = fault["errorCode"]
    vendor, detail = fault.get("vendorErrorCode"), fault.get("detail")
    if vendor and not (detail or "").startswith(vendor):
        codes += f", {vendor}"
    return f"{fault['kind']} ({codes})" + (f": {detail}" if detail else "")


def _row(connector: dict[str, Any]) -> list[str]:
    return [
        str(connector["id"]),
        connector["status"],
        connector["errorCode"],
        _or_dash(connector["transactionId"]),
        _or_dash(connector["idTag"]),
        "yes" if connector["plugged"] else "no",
        "closed" if connector["relayClosed"] else "open",
        f"{connector['powerW'] / 1000:.1f}",
        f"{connector['energyWh'] / 1000:.2f}",
        f"{connector['currentA']:.1f}",
        f"{connector['voltageV']:.1f}",
        "-" if connector["soc"] is None else f"{connector['soc']:.0f}%",
    ]


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def describe_authorization(decision: dict[str, Any]) -> str:
    """What the charger decided about a tag, e.g. `TAG-1: Invalid (central system)` or
    `TAG-1: Accepted (the transaction's own tag), stops the transaction`."""
    if decision["status"] is None:
        line = f"{decision['idTag']}: {decision['detail'] or 'no decision'}"
    else:
        line = f"{decision['idTag']}: {decision['status']} ({decision['source']})"
        if decision["detail"]:
            line += f", {decision['detail']}"
    return line


def describe_connector(connector: dict[str, Any]) -> str:
    """One line after a `sim` action, e.g. `connector 1: Charging, plugged, relay closed, ...`."""
    parts = [f"connector {connector['id']}: {connector['status']}"]
    if connector["errorCode"] != "NoError":
        parts.append(f"error {connector['errorCode']}")
    parts += [f"fault {describe_fault(f)}" for f in connector.get("faults") or ()]
    parts.append("plugged" if connector["plugged"] else "unplugged")
    parts.append("relay closed" if connector["relayClosed"] else "relay open")
    if connector["transactionId"] is not None:
        parts.append(f"transaction {connector['transactionId']}")
    if connector["idTag"] is not None:
        parts.append(f"idTag {connector['idTag']}")
    if connector["powerW"]:
        parts.append(f"{connector['powerW'] / 1000:.1f} kW")
    if connector["energyWh"]:
        parts.append(f"{connector['energyWh'] / 1000:.2f} kWh")
    if connector["soc"] is not None:
        parts.append(f"SoC {connector['soc']:.0f}%")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run just these subcommands (for tests and `python -m`-less use)."""
    parser = argparse.ArgumentParser(prog="dcocpp")
    add_subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status
