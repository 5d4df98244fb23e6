"""One gun: its OCPP status as rules over the physical truth, and the task that drives it.

`events` are what happens to a gun (from the hardware, the driver, the central system) and
what it asks for in return; `machine` is the pure state machine (no trio, no I/O; a
`transitions` Machine over the OCPP statuses); `metering` turns meter readings into OCPP
MeterValues; `task` is the trio task per gun that feeds the machine from the hardware and the
session and carries out its effects, with cancel scopes enforcing the relay-ack deadlines.

Errors: `machine.MachineInconsistency` (a RuntimeError) is a bug of ours, never expected; the
task turns the lower layers' errors (`HardwareError`, `OcppError`, `StorageError`) into faults
and messages.
"""
