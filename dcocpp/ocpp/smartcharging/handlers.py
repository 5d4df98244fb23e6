"""Handlers of the central system's SmartCharging CALLs: SetChargingProfile,
ClearChargingProfile and GetCompositeSchedule (OCPP 1.6 5.5, 5.7, 5.16).

A mixin of `CoreHandlers` (the RPC layer routes every `@on` method of one object); the profiles
live in the session's `ChargingProfiles`, and what the charger knows about a connector comes
from `ChargePointControl.charging_context`. While SmartCharging is not in
SupportedFeatureProfiles, SetChargingProfile answers NotSupported, GetCompositeSchedule
Rejected and ClearChargingProfile Unknown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, ChargingProfileStatus, ClearChargingProfileStatus
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingRateUnitType as Unit
from ocpp.v16.enums import GetCompositeScheduleStatus as CompositeStatus

from dcocpp.ocpp.smartcharging.profiles import format_datetime

if TYPE_CHECKING:
    from dcocpp.ocpp.services import SessionServices

log = logging.getLogger(__name__)

# ChargingScheduleAllowedChargingRateUnit's names for the units.
_UNIT_NAMES = {"Current": Unit.amps, "Power": Unit.watts}


class SmartChargingHandlers:
    session: SessionServices

    def _known_connector(self, connector_id: int) -> bool:
        return connector_id == 0 or connector_id in self.session.control.connector_ids

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> Any:
        profiles = self.session.charging_profiles
        if not profiles.supported:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.not_supported)
        if not self._known_connector(connector_id):
            log.warning("SetChargingProfile rejected: there is no connector %d", connector_id)
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        context = self.session.control.charging_context(connector_id)
        status = await profiles.set_profile(connector_id, cs_charging_profiles, context)
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(
        self,
        id: int | None = None,  # the OCPP field name
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> Any:
        profiles = self.session.charging_profiles
        if not profiles.supported:
            return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.unknown)
        status = await profiles.clear(
            id=id,
            connector_id=connector_id,
            purpose=None if charging_profile_purpose is None else Purpose(charging_profile_purpose),
            stack_level=stack_level,
        )
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        profiles = self.session.charging_profiles
        if not profiles.supported or not self._known_connector(connector_id) or duration <= 0:
            return call_result.GetCompositeSchedule(status=CompositeStatus.rejected)
        unit = Unit(charging_rate_unit) if charging_rate_unit else self._default_unit()
        context = self.session.control.charging_context(connector_id)
        composite = await profiles.composite(connector_id, duration, unit, context)
        return call_result.GetCompositeSchedule(
            status=CompositeStatus.accepted,
            connector_id=connector_id,
            schedule_start=format_datetime(composite.start),
            charging_schedule=composite.to_charging_schedule(unlimited=context.local_limit(unit)),
        )

    def _default_unit(self) -> Unit:
        """Without chargingRateUnit: the first unit ChargingScheduleAllowedChargingRateUnit
        lists (amperes when it lists none we know)."""
        names = self.session.store.get_list("ChargingScheduleAllowedChargingRateUnit")
        return next((_UNIT_NAMES[n] for n in names if n in _UNIT_NAMES), Unit.amps)
