"""The command line: `python -m dcocpp` and the `dcocpp` script.

`commands` holds `main` and the `run` and `check-config` commands; `init` writes the default
configuration out; `args` the arguments several commands share; `sim` the `sim` and `status`
commands (through `dcocpp.api.client`); `plcsim` the PLC simulator on a CAN bus; `demo` the
demo's command; `statecharts` exports the diagrams; `logs` the operator's console logging. The
top of the layers: it may import everything, and nothing imports it (`dcocpp.__main__` aside).

Errors: the layers' errors meant for the operator (`ConfigError`, `HardwareError`,
`StorageError`, `ApiError`, an OCPP `ConfigurationError`) end here as one line on stderr and an
exit status (`commands._ended_by`), their traceback only at DEBUG; anything else is a bug and
its traceback is shown. The command line's own are `logs.LoggingError` (the log file cannot be
written) and, in `plcsim`, `PlcSimError` (`BusOpenError`: the CAN bus cannot be opened).
"""
