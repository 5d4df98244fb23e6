"""The hardware layer: the contract connectors use (`interface`), the CAN PLC driver (`plc/`:
the protocol core, the trio driver, the emulated PLCs) and the simulator (`simulation`).
Nothing here speaks OCPP; it imports only the leaves.

Errors::

    Exception
    ├── interface.HardwareError             the layer's root: names the gun, PLC or bus
    │   ├── plc.codec.PlcCodecError         a frame the DBC contract cannot carry
    │   │   └── plc.codec.CrcError          a frame whose CRC-8 is wrong
    │   ├── plc.gun.PlcDriverError          a PLC does not do what it was told (no ack,
    │   │   │                               a refused ConfigCmd), or the bus cannot be used
    │   │   └── plc.driver.CanBusNotFound   the CAN channel does not exist on this machine
    │   └── plc.emulator.PlcEmulatorError   the emulated PLCs cannot run
    └── plc.bridge.BusReadError             internal: reading the bus failed; the driver and
                                            the emulator translate it into their own error
"""
