"""Promotion gate: a candidate replaces production only if it is at least as good plus a margin.

Metrics are the ones each version recorded on its own held-out split. A candidate whose
feature names differ from production's is rejected: the gateway validates requests against
the production schema, so such a switch must be an explicit ``python -m training promote``.
"""

from __future__ import annotations

from core.store import GateDecision, ModelMetadata

# Float noise must not turn "equal" into "worse" (0.1 + 0.2 > 0.3).
TOLERANCE = 1e-9


def decide(
    candidate: ModelMetadata,
    production: ModelMetadata | None,
    metric: str,
    margin: float = 0.0,
) -> GateDecision:
    """Promote or reject ``candidate`` against the current ``production`` version."""
    if metric not in candidate.metrics:
        raise ValueError(f"candidate has no {metric!r} metric")
    score = float(candidate.metrics[metric])
    margin = float(margin)
    base = {"metric": metric, "candidate": score, "margin": margin}
    if production is None:
        return GateDecision(
            decision="promoted", reason="first version: no production model to beat", **base
        )
    base["production_version"] = production.version
    if production.feature_names != candidate.feature_names:
        return GateDecision(
            decision="rejected",
            reason=(
                f"features {candidate.feature_names} differ from production "
                f"v{production.version} {production.feature_names}; promote it explicitly"
            ),
            **base,
        )
    if metric not in production.metrics:
        return GateDecision(
            decision="promoted",
            reason=f"production v{production.version} has no recorded {metric}",
            **base,
        )
    current = float(production.metrics[metric])
    needed = current + margin
    base["production"] = current
    if score + TOLERANCE >= needed:
        return GateDecision(
            decision="promoted",
            reason=f"{metric} {score:.4f} >= production {current:.4f} + margin {margin:g}",
            **base,
        )
    return GateDecision(
        decision="rejected",
        reason=f"{metric} {score:.4f} < production {current:.4f} + margin {margin:g}",
        **base,
    )
