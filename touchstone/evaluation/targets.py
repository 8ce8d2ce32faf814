"""What a certification promises: the two error-rate targets, the confidence, and the range of
counterfeit share in traffic they must hold for. Free of scipy, so that the model card (and so
serving) can read them without the statistics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShareRange:
    """The counterfeit share of traffic the decision rates are certified for."""

    low: float = 0.10
    high: float = 0.30

    def __post_init__(self) -> None:
        if not 0.0 < self.low <= self.high < 1.0:
            raise ValueError(
                f"a counterfeit share range needs 0 < low <= high < 1, got {self.low}..{self.high}"
            )

    def covers(self, other: ShareRange) -> bool:
        return self.low <= other.low and other.high <= self.high


@dataclass(frozen=True)
class Targets:
    false_authentic: float = 0.005
    false_counterfeit: float = 0.02
    confidence: float = 0.95
    counterfeit_share: ShareRange = field(default_factory=ShareRange)
