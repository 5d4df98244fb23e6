"""One gun: its OCPP status as rules over the physical truth, and the task that drives it.

The pure core (no trio, no I/O): `events` are what happens to a gun (from the hardware, the
driver, the central system) and what it asks for in return; `truth` the facts about the gun;
`rules` the numbered status rules that decide its OCPP status (`faults` how a fault is
reported); `statechart` the rules as a `transitions` Machine over the OCPP statuses, and its
picture; `machine` takes the events and keeps the truth; `exploration` walks every truth the
events reach (the tests and the generated event table); `metering` turns meter readings into
OCPP MeterValues.

The async shell around it, one `task.ConnectorTask` per gun: the inbox loop that feeds the
machine and carries out its effects (`task`), the relay worker with its ack deadlines
(`relay`), the gun's transactions (`transactions`), what they bill (`billing`), the meter
values on their timers (`sampling`), what became of a tag presented at the reader
(`tagwaits`), and the station's reservations as the gun sees them (`reservationdesk`).

Errors::

    RuntimeError
    └── machine.MachineInconsistency   the truth demands a status change the machine has
                                       no transition for: a bug of ours, never expected

The connector has no exception root of its own. The shell turns the lower layers' errors into
what the machine understands: a `HardwareError` or a missed deadline of a relay or lock
command is a fault, an `OcppError` of meter values outside a transaction a log line. The
outbox's `StorageError` escapes `ConnectorTask.run`: a transaction that cannot be stored does
not start, and the station stops on it.
"""
