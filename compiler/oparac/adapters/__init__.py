"""Adapters that let other tools run Opara plans (the ONNX backend)."""
