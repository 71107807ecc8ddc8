"""Machines: interfaces, disks, BMC, labels, discovered attributes, lifecycle state."""
