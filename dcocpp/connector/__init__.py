"""One gun: its OCPP status as rules over the physical truth, and the task that drives it.

`events` are what happens to a gun (from the hardware, the driver, the central system) and
what it asks for in return; `machine` is the pure state machine (no trio, no I/O; a
`transitions` Machine over the OCPP statuses); `metering` turns meter readings into OCPP
MeterValues; `task` is the trio task per gun that feeds the machine from the hardware and the
session and carries out its effects, with cancel scopes enforcing the relay-ack deadlines.

Errors: `machine.MachineInconsistency` (a RuntimeError) is a bug of ours, never expected; the
task turns a `HardwareError` into a fault and an `OcppError` of an authorization into its
answer; a `StorageError` (the outbox could not store a message) ends the boot, for the station
to handle (`Station._database_failed`).
"""
