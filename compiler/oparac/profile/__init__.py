"""Profiling: timing every op on the GPU, the analytic cost model, the profile cache, copy links."""
