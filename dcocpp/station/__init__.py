"""The station: the only layer that knows both OCPP and the hardware.

`station.Station` wires one boot together (the OCPP session and its outbox, one connector task
per gun, the hardware backend, the local API) and rebuilds it on a soft reset; `limits` turns
smart-charging schedules into each gun's current limit; `reservations` keeps ReserveNow's
reservations and tells the connectors. It may import every layer below it (`ocpp`,
`connector`, `hardware`, `api`'s server and the leaves `config`, `storage`, `clock`, `idtags`,
`jsontypes`); only the command line and the demo import it.

Errors: the station has no exception root of its own. The layers' errors that reach it and
name a thing and its cause (`HardwareError`, `StorageError`, `ApiError`, an OCPP
`ConfigurationError`) end the run, and the command line prints them in one line each;
anything else is a bug. It raises `station.HardReset` (not an error: the central system's
Reset Hard, which ends the process so that its supervisor starts it again).
"""
