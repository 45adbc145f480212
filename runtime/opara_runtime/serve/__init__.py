"""Serving plans: request bodies (codec), batching onto a RunnerPool (batching), and a Ray Serve deployment.

The deployment needs Ray (`pip install "opara[serve]"`); the rest of the package does not, and importing it does
not import Ray: OparaDeployment, opara_app and build_app are loaded from serve.deployment when first named.
"""
from __future__ import annotations

_DEPLOYMENT = ("OparaDeployment", "opara_app", "build_app")

__all__ = list(_DEPLOYMENT)


def __getattr__(name: str):
    if name in _DEPLOYMENT:
        from opara_runtime.serve import deployment

        return getattr(deployment, name)
    raise AttributeError(f"module 'opara_runtime.serve' has no attribute {name!r}")
