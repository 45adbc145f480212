"""Fusion: cutting a schedule into segments that TorchInductor compiles."""
