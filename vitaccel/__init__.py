"""vitaccel: a generator of FPGA accelerators for quantized Vision Transformers."""

__version__ = "0.1.0"
