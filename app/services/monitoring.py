"""Drift as the gateway shows it: the latest check a worker stored (core/monitoring.py), read
with the asyncio client, judged against the production version the catalog serves. No
numpy here: the numbers were computed by the workers (workers/monitoring.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

import redis.asyncio as aioredis
from loguru import logger
from pydantic import ValidationError

from app.services.catalog import Production
from core.monitoring import (
    NO_PRODUCTION,
    NO_PROFILE,
    NOT_MONITORED,
    PENDING,
    DriftResult,
    monitoring_key,
)
from core.settings import Settings

SHOWN_SETTINGS = (
    "enabled", "interval_seconds", "window", "min_rows", "psi_threshold", "ks_p_value",
    "retrain_on_drift", "retrain_psi_threshold", "retrain_cooldown_seconds",
)  # fmt: skip


def parse(model: str, raw: bytes | str | None) -> DriftResult | None:
    """A stored result, or None when there is none or it does not parse (logged)."""
    if raw is None:
        return None
    try:
        return DriftResult.model_validate_json(raw)
    except ValidationError as exc:
        logger.warning("ignoring the stored drift result of {}: {}", model, exc.errors()[:1])
        return None


async def latest(client: aioredis.Redis, model: str) -> DriftResult | None:
    return parse(model, await client.get(monitoring_key(model)))


async def latest_of(client: aioredis.Redis, models: list[str]) -> dict[str, DriftResult]:
    """The stored results of ``models`` (those that have one), in one round trip."""
    if not models:
        return {}
    raws = await client.mget([monitoring_key(m) for m in models])
    found = {model: parse(model, raw) for model, raw in zip(models, raws, strict=True)}
    return {model: result for model, result in found.items() if result is not None}


def status(production: Production | None, result: DriftResult | None, monitored: bool) -> str:
    """What to say of the production version's drift: the check of that version when one is
    stored, else why there is none."""
    if production is None:
        return NO_PRODUCTION
    if result is not None and result.version == production.version:
        return result.status
    if production.metadata.reference_profile is None:
        return NO_PROFILE
    return PENDING if monitored else NOT_MONITORED


def monitored(settings: Settings, model: str) -> bool:
    """Beat checks the models of the settings whose monitoring is on (workers/schedule.py)."""
    configured = settings.models.get(model)
    return configured is not None and configured.monitoring.enabled


def view(
    settings: Settings, model: str, production: Production | None, result: DriftResult | None
) -> dict:
    """The body of ``GET /models/{name}/monitoring``."""
    cfg = settings.monitoring_of(model)
    checks = monitored(settings, model)
    return {
        "model_name": model,
        "production_version": production.version if production is not None else None,
        "status": status(production, result, checks),
        "monitored": checks,
        "settings": {key: getattr(cfg, key) for key in SHOWN_SETTINGS},
        "latest": result.model_dump(mode="json") if result is not None else None,
    }


# -- the model card's live section --------------------------------------------------------------

BAR_WIDTH = 240
BAR_HEIGHT = 18


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _bar(psi: float, threshold: float, scale: float) -> str:
    """PSI as a horizontal bar, the threshold as a line; red past it."""
    width = BAR_WIDTH * min(psi / scale, 1.0) if scale > 0 else 0.0
    mark = BAR_WIDTH * min(threshold / scale, 1.0) if scale > 0 else 0.0
    fill = "#c33" if psi > threshold else "#4a7"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" '
        f'role="img" aria-label="PSI {psi:.3f}"><rect x="0" y="3" width="{width:.1f}" '
        f'height="{BAR_HEIGHT - 6}" fill="{fill}"/><line x1="{mark:.1f}" x2="{mark:.1f}" y1="0" '
        f'y2="{BAR_HEIGHT}" stroke="#222" stroke-dasharray="3,2"/></svg>'
    )


def card_section(version: int, result: DriftResult | None) -> str:
    """HTML for a version's card: its latest drift check, if the one stored is of it."""
    head = "<h2>Drift (latest check)</h2>"
    if result is None or result.version != version:
        return f"{head}<p>No drift check of v{version} is stored (production versions are).</p>"
    checked = datetime.fromtimestamp(result.checked_at, UTC).isoformat(timespec="seconds")
    summary = f'<p class="drift-{_e(result.status)}"><b>{_e(result.status)}</b> at {_e(checked)}'
    if not result.features:  # it judged nothing: say why
        return f"{head}{summary}: {_e(result.detail)}</p>"
    summary += (
        f", {result.rows} logged rows (window {result.window}, at least {result.min_rows}); a "
        f"feature drifts when PSI &gt; {result.psi_threshold:g} and the KS p-value &lt; "
        f"{result.ks_p_value:g}.</p>"
    )
    scale = max([f.psi for f in result.features] + [result.psi_threshold * 2, 1e-9])
    rows = "".join(
        f"<tr><td>{_e(f.name)}</td><td>{f.psi:.4f}</td>"
        f"<td>{_bar(f.psi, result.psi_threshold, scale)}</td>"
        f"<td>{f.ks_statistic:.4f}</td><td>{f.ks_p_value:.3g}</td>"
        f"<td>{'yes' if f.drifted else 'no'}</td></tr>"
        for f in result.features
    )
    classes = (
        "" if result.class_psi is None else f"<p>Predicted classes: PSI {result.class_psi:.4f}.</p>"
    )
    return (
        head
        + summary
        + "<table><tr><th>feature</th><th>PSI</th><th></th><th>KS statistic</th>"
        + f"<th>KS p-value</th><th>drifted</th></tr>{rows}</table>"
        + classes
    )


def with_drift(card: str, section: str) -> str:
    """The card with ``section`` before its end (cards are written at training time; drift
    is checked later, so the gateway adds it when it serves the card)."""
    at = card.rfind("</body>")
    return card + section if at < 0 else card[:at] + section + card[at:]
