"""The plan digest: sha256 over the canonical bytes of the whole plan (fusion programs included), unsigned."""
from __future__ import annotations

import dataclasses
import hashlib

from opara_plan.canonical import write_canonical
from opara_plan.schema import Plan


def plan_digest(plan: Plan) -> str:
    """'sha256:<hex>' of the plan as written with its signature field empty, so signing does not change it."""
    if plan.signature:
        plan = dataclasses.replace(plan, signature=())
    h = hashlib.sha256()
    write_canonical(plan, h.update)
    return "sha256:" + h.hexdigest()
