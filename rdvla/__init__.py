"""rdvla: export, compile and run Recurrent-Depth VLA policies on NVIDIA Jetson."""

__version__ = "0.1.0"
