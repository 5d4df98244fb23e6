"""OCPP 1.6J towards the central system: the transport (`transport`, TLS and the WebSocket), the
RPC framing (`wire`, `rpc`), the session (`session`: registration, heartbeats, reconnects),
the persistent outbox of transaction messages (`transactions`), the handlers of the central
system's CALLs (`handlers`, `smartcharging/handlers`), configuration keys, authorization
(`authcache`, `locallist`), smart charging (`smartcharging/`) and, version-neutral, the
certificate store (`certificates/`, its 1.6 CALLs in `securityhandlers`) and the file transfer
service (`transfer/`: downloads and uploads over FTP(S) and HTTP(S)). It never
imports the hardware, the connectors, the station, the API or the command line: what it may
ask of the charger is the `control.ChargePointControl` protocol, and what its handlers may
touch is `services.SessionServices`.

Errors::

    Exception
    └── errors.OcppError                          the layer's root
        ├── errors.TransportError                 cannot connect (address, TLS, HTTP reject,
        │   │                                     subprotocol)
        │   └── errors.UntrustedCertificate       the central system's certificate fails
        │                                         verification
        ├── errors.ConnectionLost                 no connection for a CALL, or it ended
        │                                         under one
        ├── errors.CallError                      a CALLERROR: the central system's answer,
        │   │                                     or ours to its CALL (raised by a handler)
        │   └── wire.FrameError                   a frame that is not OCPP-J
        │                                         (FormationViolation)
        ├── errors.InvalidPayload                 an answer that breaks its schema, or that
        │   │                                     cannot be read
        │   └── errors.UnsendablePayload          a message of ours that breaks it (our bug)
        ├── session.ResponseTimeout               no answer within ResponseTimeout
        ├── configuration.ConfigurationError      a configuration file, or a key's value
        ├── authcache.AuthStoreError              the authorization cache's storage failed
        ├── smartcharging.ProfileError            a charging profile OCPP or we cannot take
        ├── smartcharging.service.ProfileStoreError
        │                                         the installed profiles' storage failed
        ├── certificates.CertificateError         a certificate not installed (Rejected, or
        │                                         the store's files failed)
        └── transfer.TransferError                a download or upload that did not happen
"""
