"""The command line: `python -m dcocpp` and the `dcocpp` script.

`commands` holds `main` and the `run` and `check-config` commands; `init` writes the default
configuration out; `args` the arguments several commands share; `sim` the `sim` and `status`
commands (through `dcocpp.api.client`); `plcsim` the PLC simulator on a CAN bus; `demo` the
demo's command; `statecharts` exports the diagrams; `logs` the operator's console logging. The
top of the layers: it may import everything, and nothing imports it (`dcocpp.__main__` aside).

Errors::

    Exception
    ├── logs.LoggingError         the log directory or the message log cannot be used
    └── plcsim.PlcSimError        `plc-sim` cannot run (stdin unreadable)
        └── plcsim.BusOpenError   its CAN bus cannot be opened
    ValueError
    └── plcsim.ConsoleError       a console line plc-sim cannot carry out: answered on
                                  stdout, never escapes

`commands.main` turns what the operator must fix into one line on stderr and an exit status:
the layers' `ApiError`, `StorageError`, `HardwareError`, `ConfigurationError` and the
`LoggingError` above, and in the commands that raise them `ConfigError`, `InitError`,
`DemoError` and `PlcSimError`. Anything else is a bug and keeps its traceback.
"""
