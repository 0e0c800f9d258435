"""Kernel adapters: the only code with side effects on namespaces, links and mounts."""
