"""Docker's remote network driver and IPAM driver, served by cnmd (plugin.py, server.py)."""
