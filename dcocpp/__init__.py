"""dcocpp: controller of a multi-gun DC fast charger (OCPP 1.6J, CAN PLCs, trio)."""

__version__ = "0.1.0"
