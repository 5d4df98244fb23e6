"""The hardware layer: the contract connectors use (`interface`), the CAN PLC driver and the
simulator. Nothing here speaks OCPP."""
