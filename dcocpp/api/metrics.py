"""`GET /metrics`: the charger in Prometheus' text format, read from the station at scrape time.

A custom `prometheus_client` collector: nothing is counted twice, every figure is the one
`GET /api/status` shows at that moment (the snapshot) or the link's own counters
(`StationView.link_counters`). Names follow Prometheus' conventions: the `dcocpp_` prefix, base
units (seconds, volts, amperes, watts, joules: the meter's Wh are exported as joules, 1 Wh =
3600 J), `_total` for counters, a state set as one gauge per state with 1 on the current one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dcocpp.clock import parse_ocpp_time

JOULES_PER_WH = 3600.0
# OCPP 1.6's ChargePointStatus, the states of `dcocpp_connector_status`.
STATUSES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
)
# OCPP 1.6's FirmwareStatus, the states of `dcocpp_firmware_status`.
FIRMWARE_STATUSES = (
    "Idle",
    "Downloading",
    "Downloaded",
    "DownloadFailed",
    "Installing",
    "Installed",
    "InstallationFailed",
)
# The fault kinds a gun reports (the API's FAULT_KINDS, plus the relay's own supervision).
FAULTS = ("estop", "earth", "comm", "meter", "lock", "relay")
# The hardware's counters (`HardwareBackend.counters`, the PLC driver's on CAN) by name:
# (metric, help, labels).
_CAN_COUNTERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "rxFrames": ("dcocpp_can_frames", "CAN frames", {"direction": "received"}),
    "txFrames": ("dcocpp_can_frames", "CAN frames", {"direction": "sent"}),
    "repeats": ("dcocpp_can_repeated_frames", "received frames equal to the last of their id", {}),
    "ignored": ("dcocpp_can_ignored_frames", "frames from no configured PLC", {}),
    "crcErrors": ("dcocpp_can_errors", "CAN frames dropped or not sent", {"kind": "crc"}),
    "decodeErrors": ("dcocpp_can_errors", "CAN frames dropped or not sent", {"kind": "decode"}),
    "rxOverruns": ("dcocpp_can_errors", "CAN frames dropped or not sent", {"kind": "rx_overrun"}),
    "txErrors": ("dcocpp_can_errors", "CAN frames dropped or not sent", {"kind": "tx"}),
}


class MetricsSource(Protocol):
    """What the collector reads (the API's `StationView` provides both)."""

    def snapshot(self) -> dict[str, Any]: ...

    def link_counters(self) -> dict[str, Any]: ...


class StationCollector(Collector):
    """Reads `source` at every scrape (see the module docstring)."""

    def __init__(self, source: MetricsSource):
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source.snapshot()
        yield from _connectors(snapshot["connectors"])
        yield from _charge_point(snapshot["chargePoint"])
        if snapshot["chargePoint"].get("firmware"):
            yield from _firmware(snapshot["chargePoint"]["firmware"])
        yield from _transfers(snapshot["chargePoint"])
        yield from _certificates(snapshot["chargePoint"].get("security"))
        yield from _link(self._source.link_counters())
        yield from _hardware(snapshot["chargePoint"]["hardware"])


def registry_for(source: MetricsSource) -> CollectorRegistry:
    """A registry of its own (not the process-wide default: a test may run several stations)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StationCollector(source))
    return registry


def _connectors(entries: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    gun = ["connector"]
    status = GaugeMetricFamily(
        "dcocpp_connector_status",
        "OCPP status of the gun (1 on the current one)",
        labels=[*gun, "status"],
    )
    faults = GaugeMetricFamily(
        "dcocpp_connector_fault_active", "1 while the fault is active", labels=[*gun, "kind"]
    )
    gauges = {
        "powerW": GaugeMetricFamily("dcocpp_connector_power_watts", "DC power", labels=gun),
        "currentA": GaugeMetricFamily("dcocpp_connector_current_amperes", "DC current", labels=gun),
        "voltageV": GaugeMetricFamily("dcocpp_connector_voltage_volts", "DC voltage", labels=gun),
    }
    soc = GaugeMetricFamily("dcocpp_connector_soc_ratio", "EV state of charge, 0 to 1", labels=gun)
    energy = CounterMetricFamily(
        "dcocpp_connector_energy_joules", "the meter's register (1 Wh = 3600 J)", labels=gun
    )
    session = GaugeMetricFamily(
        "dcocpp_connector_session_energy_joules",
        "energy of the running transaction (1 Wh = 3600 J)",
        labels=gun,
    )
    limit = GaugeMetricFamily(
        "dcocpp_connector_current_limit_amperes",
        "current limit given to the gun's hardware (smart charging, rating, station share)",
        labels=gun,
    )
    plugged = GaugeMetricFamily("dcocpp_connector_plugged", "1 while an EV is plugged", labels=gun)
    relay = GaugeMetricFamily(
        "dcocpp_connector_relay_closed", "1 while the relay is closed", labels=gun
    )
    for entry in entries:
        cid = str(entry["id"])
        for state in STATUSES:
            status.add_metric([cid, state], 1.0 if entry["status"] == state else 0.0)
        active = {fault["kind"] for fault in entry["faults"]}
        for kind in FAULTS:
            faults.add_metric([cid, kind], 1.0 if kind in active else 0.0)
        for field, family in gauges.items():
            family.add_metric([cid], float(entry[field]))
        if entry["soc"] is not None:
            soc.add_metric([cid], entry["soc"] / 100)
        energy.add_metric([cid], entry["energyWh"] * JOULES_PER_WH)
        tx = entry.get("transaction")
        if tx is not None:
            session.add_metric([cid], tx["energyWh"] * JOULES_PER_WH)
        if entry["currentLimitA"] is not None:
            limit.add_metric([cid], float(entry["currentLimitA"]))
        plugged.add_metric([cid], float(entry["plugged"]))
        relay.add_metric([cid], float(entry["relayClosed"]))
    yield from (status, faults, *gauges.values(), soc, energy, session, limit, plugged, relay)


def _charge_point(cp: Mapping[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "dcocpp_ocpp_connected", "1 while connected to the central system", value=cp["connected"]
    )
    registration = GaugeMetricFamily(
        "dcocpp_ocpp_registration", "registration state (1 on the current one)", labels=["state"]
    )
    for state in ("Disconnected", "Connecting", "Booting", "Pending", "Rejected", "Accepted"):
        registration.add_metric([state], 1.0 if cp["registration"] == state else 0.0)
    yield registration
    yield GaugeMetricFamily(
        "dcocpp_outbox_messages",
        "transaction messages queued, not yet answered",
        value=cp["outbox"]["queued"],
    )
    yield GaugeMetricFamily(
        "dcocpp_outbox_parked_messages",
        "queued messages parked after refusals (need the operator)",
        value=cp["outbox"]["parked"],
    )
    oldest = cp["outbox"].get("oldestAgeS")
    if oldest is not None:
        yield GaugeMetricFamily(
            "dcocpp_outbox_oldest_age_seconds", "age of the oldest queued message", value=oldest
        )
    link = cp.get("link") or {}
    if link.get("pingRoundTripS") is not None:
        yield GaugeMetricFamily(
            "dcocpp_ocpp_ping_round_trip_seconds",
            "the last WebSocket ping's round trip",
            value=link["pingRoundTripS"],
        )


def _firmware(firmware: Mapping[str, Any]) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "dcocpp_firmware_status",
        "the last FirmwareStatusNotification status (1 on the current one)",
        labels=["status"],
    )
    for state in dict.fromkeys((*FIRMWARE_STATUSES, firmware["status"])):
        status.add_metric([state], 1.0 if firmware["status"] == state else 0.0)
    yield status
    yield InfoMetricFamily(
        "dcocpp_firmware", "the firmware running", value={"version": firmware["version"]}
    )


def _transfers(cp: Mapping[str, Any]) -> Iterator[Metric]:
    """The firmware download, the diagnostics and the log upload under way (or the last one of
    this start): each has its own field names in the status."""
    moved = GaugeMetricFamily(
        "dcocpp_transfer_bytes",
        "bytes moved by the file transfer under way, or the last one since the start",
        labels=["transfer"],
    )
    size = GaugeMetricFamily(
        "dcocpp_transfer_size_bytes",
        "the size of the transferred file, where known",
        labels=["transfer"],
    )
    transfers = [
        ("firmware", (cp.get("firmware") or {}).get("update"), "bytesDone", "bytesTotal"),
        ("diagnostics", (cp.get("diagnostics") or {}).get("upload"), "bytes_done", "bytes_total"),
        ("log", (cp.get("logs") or {}).get("upload"), "bytes_done", "bytes_total"),
    ]
    for name, transfer, done, total in transfers:
        if transfer is None:
            continue
        moved.add_metric([name], float(transfer[done]))
        if transfer[total] is not None:
            size.add_metric([name], float(transfer[total]))
    yield moved
    yield size


def _certificates(security: Mapping[str, Any] | None) -> Iterator[Metric]:
    expiry = GaugeMetricFamily(
        "dcocpp_certificate_expiry_timestamp_seconds",
        "notAfter of the charge point certificate, and the earliest of the installed"
        " CentralSystemRootCertificates (Unix time)",
        labels=["certificate"],
    )
    if security is not None:
        for name, field in (
            ("charge_point", "chargePointCertificateValidTo"),
            ("central_system_root", "centralSystemRootsValidTo"),
        ):
            if security.get(field) is not None:
                expiry.add_metric([name], parse_ocpp_time(security[field]).timestamp())
    yield expiry


def _link(counters: Mapping[str, Any]) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "dcocpp_ocpp_messages",
        "OCPP-J frames by action, direction and type (CALL, CALLRESULT, CALLERROR)",
        labels=["action", "direction", "type"],
    )
    errors = CounterMetricFamily(
        "dcocpp_ocpp_call_errors",
        "CALLERROR frames by action and direction",
        labels=["action", "direction"],
    )
    for entry in counters["messages"]:
        messages.add_metric([entry["action"], entry["direction"], entry["type"]], entry["count"])
        if entry["type"] == "CALLERROR":
            errors.add_metric([entry["action"], entry["direction"]], entry["count"])
    yield messages
    yield errors
    trips = counters["roundTrip"]
    yield HistogramMetricFamily(
        "dcocpp_ocpp_round_trip_seconds",
        "from a CALL sent by the charger to its answer",
        buckets=[(_bound(bound), count) for bound, count in trips["buckets"]],
        sum_value=trips["sum"],
    )
    connections = counters["connections"]
    yield CounterMetricFamily(
        "dcocpp_ocpp_connections", "WebSocket connections opened", value=connections
    )
    yield CounterMetricFamily(
        "dcocpp_ocpp_reconnects",
        "connections opened after the first",
        value=max(0, connections - 1),
    )
    yield CounterMetricFamily(
        "dcocpp_ocpp_connection_failures",
        "connection attempts that failed, and connections lost",
        value=counters["connectionFailures"],
    )


def _hardware(counters: Mapping[str, int]) -> Iterator[Metric]:
    families: dict[str, CounterMetricFamily] = {}
    for name, value in sorted(counters.items()):
        metric, doc, labels = _CAN_COUNTERS.get(
            name, ("dcocpp_hardware_events", "the hardware's other counters", {"counter": name})
        )
        family = families.get(metric)
        if family is None:
            family = families[metric] = CounterMetricFamily(metric, doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
    yield from families.values()


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
