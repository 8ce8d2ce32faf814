"""A policy may only be stricter than the model card it serves.

The card's thresholds hold their error rates at the stated confidence only as certified: at or
above its `authentic_at`, at or below its `counterfeit_at`, on traffic whose counterfeit share
lies in its certified range. A policy override that moves a threshold the other way, switches
on a side the card found unsupported, or declares traffic outside that range would serve
decisions nothing vouches for. `check_policy` refuses such a pair: `touchstone serve` before it
starts (exit code 2), and every model switch (`ModelManager.load`), which keeps the old model.
"""

from __future__ import annotations

from serving.policy.config import PolicyConfig, PolicyError
from touchstone.model_card import CardThresholds


def check_policy(policy: PolicyConfig, card: CardThresholds) -> None:
    """Raise PolicyError naming every override that loosens `card`, with both values."""
    problems = []
    for side, override, certified, stricter in (
        ("authentic_at", policy.authentic_at, card.authentic_at, "higher"),
        ("counterfeit_at", policy.counterfeit_at, card.counterfeit_at, "lower"),
    ):
        if override is None:
            continue
        if certified is None:
            problems.append(
                f"{side}: the policy sets {override} but the model card has that side "
                "unsupported (None), and a policy may not switch on a side the certification "
                "could not support"
            )
        elif (override < certified) if side == "authentic_at" else (override > certified):
            problems.append(
                f"{side}: the policy's {override} is looser than the model card's "
                f"{certified} (an override may only be stricter: {stricter} or equal)"
            )
    declared = policy.counterfeit_share.to_range()
    certified_range = card.targets.counterfeit_share.to_range()
    if not certified_range.covers(declared):
        problems.append(
            f"counterfeit_share: the policy declares traffic of {declared.low:.0%} to "
            f"{declared.high:.0%} counterfeit, outside the {certified_range.low:.0%} to "
            f"{certified_range.high:.0%} the model card's error rates are certified for"
        )
    if problems:
        raise PolicyError(
            "the routing policy loosens the model card's certification: " + "; ".join(problems)
        )
