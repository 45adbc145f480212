"""What load() and RunnerPool accept as a plan: a Plan, a PlanSet or a path to either, decoded and validated."""
from __future__ import annotations

from pathlib import Path

from opara_plan import Plan, PlanFormatError, PlanSet, load_artifact, validate, validate_plan_set


def validated_artifact(plan) -> Plan | PlanSet:
    """`plan` as a validated Plan or PlanSet: a path is read and decoded (a plan or a plan set), an object is
    validated again (it may have been built or altered in memory); anything else is a PlanFormatError."""
    if isinstance(plan, (str, Path)):
        return load_artifact(plan)
    if isinstance(plan, Plan):
        validate(plan)
        return plan
    if isinstance(plan, PlanSet):
        validate_plan_set(plan)
        return plan
    raise PlanFormatError(f"plan: expected a Plan, a PlanSet or a path, found {type(plan).__name__}")
