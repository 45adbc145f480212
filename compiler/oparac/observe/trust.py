"""What a plan says about its integrity: its digest, its signatures and the verdict on them against trusted keys."""
from __future__ import annotations

from opara_plan import Plan
from opara_plan.digest import plan_digest


def integrity(plan: Plan, trusted_keys: tuple[str, ...] = ()) -> dict:
    """{'digest', 'signatures', 'trusted', 'verdict', 'key_id', 'checked_against'}: the verdict of
    opara_plan.signing.check_signature against the public keys in `trusted_keys` (paths), or those named by
    $OPARA_TRUSTED_KEYS when none are given: what decides whether a load runs the plan's stored programs."""
    from opara_plan.signing import TRUSTED_KEYS_ENV, check_signature, load_public_key, trusted_keys_from_env

    keys = tuple(load_public_key(p) for p in trusted_keys) if trusted_keys else trusted_keys_from_env()
    verdict = check_signature(plan, keys)
    where = (f"{len(keys)} key{'s' if len(keys) != 1 else ''} from "
             f"{'--trusted-key' if trusted_keys else '$' + TRUSTED_KEYS_ENV}") if keys else "no trusted keys"
    return {"digest": plan_digest(plan), "signatures": [s.key_id for s in plan.signature],
            "trusted": verdict.trusted, "verdict": verdict.reason, "key_id": verdict.key_id,
            "checked_against": where}


def integrity_lines(info: dict, stored_programs: bool) -> list[str]:
    """The integrity report as lines for `oparac inspect`; stored_programs: the plan carries compiled code."""
    lines = [f"digest     {info['digest']}",
             f"signature  {'trusted' if info['trusted'] else 'not trusted'}: {info['verdict']} "
             f"(checked against {info['checked_against']})"]
    if stored_programs and not info["trusted"]:
        lines.append("           its stored programs run only under a trusted signature or --trust-compiled-code; "
                     "otherwise loading compiles its segments again")
    return lines
