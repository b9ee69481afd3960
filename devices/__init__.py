"""Devices on the robot: RealSense cameras (live, recorded, played back) and robot arms.

Imports numpy, pyyaml and pyzmq only; pyrealsense2 is loaded lazily when a camera is opened.
"""
