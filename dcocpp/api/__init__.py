"""The local HTTP API: the operator's and the simulator's window into a running charger.

`server` serves it (Starlette on Hypercorn's trio worker) and reaches the charger only through
its `StationView` protocol, which the station implements; `client` is the standard-library
client of `dcocpp status` and `dcocpp sim`; `contract` is what both agree on (addresses, the
token rule, the fault kinds). Nothing here imports the station, connectors, OCPP or hardware.

Errors (two roots: the server and the client run in different processes)::

    Exception
    ├── contract.ApiError        the server cannot run: its address (in use, cannot be
    │                            resolved) or its token (none off loopback, or unfit)
    └── client.ApiClientError    a request did not succeed (`refused`: the API said no)

The charger's side of `StationView` raises `KeyError` for an unknown connector and
`ValueError` for an action that does not fit the gun's state; the server answers them 404 and
422.
"""
