"""The station: the only layer that knows both OCPP and the hardware.

`station.Station` wires one boot together (the OCPP session and its outbox, one connector task
per gun, the hardware backend, the local API) and rebuilds it on a soft reset; `limits` turns
smart-charging schedules into each gun's current limit; `reservations` keeps ReserveNow's
reservations and tells the connectors. It may import every layer below it (`ocpp`,
`connector`, `hardware`, `api`'s server and the leaves `config`, `storage`, `clock`, `idtags`,
`jsontypes`, `concurrency`); only the command line and the demo import it.

Errors::

    Exception
    └── station.HardReset   not an error: the central system's Reset Hard, which ends the
                            process so that its supervisor starts it again

The station has no exception root of its own. It runs the layers' errors through
(`OcppError`, `HardwareError`, `StorageError`, `ApiError`), which the command line turns into
one line each; a `StorageError` while it runs (a transaction that cannot be recorded) first
commands every relay open. As the API's `StationView` it raises `KeyError` for an unknown
connector and `ValueError` for an action that does not fit the gun's state.
"""
