"""`rdvla doctor`: is this machine (and this bundle) ready for `rdvla run` on TensorRT?

One finding per check, each one line with its status and, unless OK, the fix. The checks read
the machine only through a `Probe` (files, commands, imports), so tests describe a Jetson by
passing their own. Importing this package needs none of TensorRT, cuda-python or pyrealsense2.
"""

from rdvla.runtime.doctor.checks import CHECKS, Finding, Machine, Status, diagnose, summary
from rdvla.runtime.doctor.probe import CommandOutput, DiskUsage, Probe, SystemProbe

__all__ = ["CHECKS", "CommandOutput", "DiskUsage", "Finding", "Machine", "Probe", "Status", "SystemProbe", "diagnose", "summary"]
