"""The local HTTP API: the operator's and the simulator's window into a running charger.

`server` serves it (Starlette on Hypercorn's trio worker) and reaches the charger only through
its `StationView` protocol, which the station implements; `client` is the standard-library
client of `dcocpp status` and `dcocpp sim`; `contract` is what both agree on (addresses, the
token rule, the fault kinds). Nothing here imports the station, connectors, OCPP or hardware.

Errors::

    Exception
    ├── contract.ApiError        the server cannot run (address in use, no token off loopback)
    └── client.ApiClientError    a request did not succeed (`refused`: the API said no)
"""
