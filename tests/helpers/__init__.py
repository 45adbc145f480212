"""Builders the tests share: plans, models, fused cases, named schedules and ONNX models (imported as helpers.x)."""
