"""The hardware boundary: the only code that asks drivers, NVML or torch about devices.

Each probe returns frozen facts and never raises; what failed, and why, is a fact too.
"""
