"""The Kafka scale-out section: bench/rebalance.py's rebalance.json (a processor joining must
revoke none of the first one's kept partitions under cooperative-sticky; the eager run beside
it shows what the probe sees when revocations happen)."""

from __future__ import annotations

from .base import MET, NOT_MET, Row, missing, number

TITLES = {"rebalance": "Rebalance: a second processor joining, eager vs cooperative (bench/rebalance.py)"}


def rebalance_rows(rebalance: dict | None) -> list[Row]:
    area, src, target = "Kafka (#17)", "rebalance", "a processor joining revokes no kept partition (cooperative-sticky)"
    revoked = number(rebalance, "cooperative_sticky.first_revocations_of_kept")
    if revoked is None:
        return [missing(area, target, src, "rebalance.json lacks cooperative_sticky.first_revocations_of_kept")]
    eager = number(rebalance, "eager_range.first_revocations_of_kept")
    detail = f" (eager: {eager:.0f})" if eager is not None else ""
    return [Row(area, target, f"{revoked:.0f} revoked{detail}", MET if revoked == 0 else NOT_MET, (src,))]
