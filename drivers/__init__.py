"""Network drivers (installed as ``cnm.drivers``)."""
