"""OCPP 1.6 smart charging. The pure core: charging profiles (`profiles`) and the composite
schedule with its enforcement helpers (`schedule`), with no I/O, no clock and no trio. Around
it, still in the OCPP layer: `service` keeps the installed profiles (persisted, answered, removed
with their transaction) and `handlers` answers the central system's SmartCharging CALLs. The
enforcement on the guns is station wiring (`dcocpp/station/limits.py`)."""

from dcocpp.ocpp.smartcharging.profiles import (
    ChargingProfile,
    ChargingSchedule,
    ChargingSchedulePeriod,
    InstalledProfile,
    InstalledProfiles,
    ProfileError,
    SmartChargingLimits,
    check_limits,
    check_profile,
    check_remote_start_profile,
    format_datetime,
    parse_profile,
)
from dcocpp.ocpp.smartcharging.schedule import (
    CompositePeriod,
    CompositeSchedule,
    RunningTransaction,
    Supply,
    composite_schedule,
    composite_steps,
    limit_now,
    next_change,
    share_station_limit,
)

__all__ = [
    "ChargingProfile",
    "ChargingSchedule",
    "ChargingSchedulePeriod",
    "CompositePeriod",
    "CompositeSchedule",
    "InstalledProfile",
    "InstalledProfiles",
    "ProfileError",
    "RunningTransaction",
    "SmartChargingLimits",
    "Supply",
    "check_limits",
    "check_profile",
    "check_remote_start_profile",
    "composite_schedule",
    "composite_steps",
    "format_datetime",
    "limit_now",
    "next_change",
    "parse_profile",
    "share_station_limit",
]
