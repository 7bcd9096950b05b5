"""Promotion gate: a candidate replaces production only if it is at least as good plus a margin.

Two comparisons. Each version's metric on its own held-out split, as recorded: the only one
before feedback exists, but not a fair one once the data moves (the candidate is judged on
data the production model never saw, and the other way round). And both models on the same
rows: the most recent labelled feedback the candidate did not train on (training/pipeline.py
takes it from the candidate's held-out split); from ``feedback.gate_min_rows`` such rows it
decides, and the held-out comparison is kept beside it (the model card shows both).

A candidate whose feature names differ from production's is rejected: the gateway validates
requests against the production schema, so such a switch must be an explicit
``python -m training promote``.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.store import GateDecision, ModelMetadata

# Float noise must not turn "equal" into "worse" (0.1 + 0.2 > 0.3).
TOLERANCE = 1e-9


@dataclass(frozen=True)
class FeedbackScores:
    """Candidate and production on the same recent labelled rows."""

    rows: int
    candidate: float
    production: float | None  # None: no production model could score them


def decide(
    candidate: ModelMetadata,
    production: ModelMetadata | None,
    metric: str,
    margin: float = 0.0,
    feedback: FeedbackScores | None = None,
    min_rows: int = 1,
) -> GateDecision:
    """Promote or reject ``candidate`` against the current ``production`` version: on recent
    ``feedback`` when it has ``min_rows`` rows both scored, else on the held-out splits."""
    decision = _held_out(candidate, production, metric, margin)
    if feedback is None:
        return decision
    decision = decision.model_copy(
        update={
            "feedback_rows": feedback.rows,
            "feedback_candidate": feedback.candidate,
            "feedback_production": feedback.production,
        }
    )
    if production is None or production.feature_names != candidate.feature_names:
        return decision
    if feedback.production is None or feedback.rows < min_rows:
        note = f" ({feedback.rows} recent labelled rows: fewer than {min_rows})"
        return decision.model_copy(update={"reason": decision.reason + note})
    passed = feedback.candidate + TOLERANCE >= feedback.production + float(margin)
    sign = ">=" if passed else "<"
    return decision.model_copy(
        update={
            "decision": "promoted" if passed else "rejected",
            "decided_on": "recent feedback",
            "reason": (
                f"on the {feedback.rows} most recent labelled rows: {metric} "
                f"{feedback.candidate:.4f} {sign} production {feedback.production:.4f} + margin "
                f"{float(margin):g} (held-out split: {decision.reason})"
            ),
        }
    )


def _held_out(
    candidate: ModelMetadata, production: ModelMetadata | None, metric: str, margin: float
) -> GateDecision:
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
