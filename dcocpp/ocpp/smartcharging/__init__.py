"""OCPP 1.6 smart charging, the pure core: charging profiles (`profiles`) and the composite
schedule with its enforcement helpers (`schedule`). No I/O, no clock, no trio: the station
wiring owns persistence, timers and the OCPP handlers, and calls these functions."""

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
    parse_datetime,
    parse_profile,
)
from dcocpp.ocpp.smartcharging.schedule import (
    CompositePeriod,
    CompositeSchedule,
    RunningTransaction,
    Supply,
    composite_schedule,
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
    "format_datetime",
    "limit_now",
    "next_change",
    "parse_datetime",
    "parse_profile",
    "share_station_limit",
]
