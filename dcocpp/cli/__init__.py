"""The command line: `python -m dcocpp` and the `dcocpp` script.

`commands` holds `main` and the `run`, `check-config`, `init`, ... commands; `args` the
arguments several commands share; `sim` the `sim` and `status` commands (through
`dcocpp.api.client`); `plcsim` the PLC simulator on a CAN bus; `demo` the demo's command;
`statecharts` exports the diagrams; `logs` the operator's console logging. The top of the
layers: it may import everything, and nothing imports it (`dcocpp.__main__` aside).

Errors: every layer's error ends here as one line on stderr and an exit status (see
`commands.main`); the command line's own are `logs.LoggingError` (the log file cannot be
written) and, in `plcsim`, `PlcSimError` (`BusOpenError`: the CAN bus cannot be opened).
"""
