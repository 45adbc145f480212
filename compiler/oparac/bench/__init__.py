"""Benchmarking: methods, the bench command and the ONNX Runtime baseline."""
