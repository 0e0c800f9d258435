"""cnm-cni: the CNI 1.1 plugin on cnm's networks (spec: the protocol as data; wire: the
client of cnmd; attach: the commands; look: CHECK's look at the kernel; plugin: main)."""
