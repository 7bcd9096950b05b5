"""Model card: one self-contained HTML page per version (no scripts, no external files).

Every value from metadata passes through ``html.escape``; the confusion matrix and the
reference profile's bins and the live-quality chart are hand-drawn SVG so the card needs no
plotting library. The card is written at training and redrawn by the workers' flusher as
feedback labels arrive (workers/flusher.py), from the version's live-quality history
(core/quality.py); the latest drift check is added by the gateway when it serves the card
(app/services/monitoring.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from pathlib import Path
from unicodedata import east_asian_width

from core.quality import METRICS, read_history
from core.store import ModelMetadata, ModelStore

CARD_FILE = "card.html"
CELL = 56
FONT = 12  # class labels' font size, px
EM = 0.62  # the glyph width of monospace fonts (DejaVu Sans Mono, Menlo: 0.602 em; Courier 0.6)
MAX_LABEL = 24  # characters of a class name shown; the whole name is its tooltip
TITLE = 20  # room for the "predicted" and "actual" axis titles

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}code{font-size:.85em;word-break:break-all}
.promoted{color:#176d2c;font-weight:bold}.rejected{color:#a11;font-weight:bold}
.matrix{max-width:100%;overflow-x:auto;margin:.5rem 0 1.5rem}
.matrix svg{display:block;font-family:system-ui,sans-serif}
.matrix .label{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
.chart svg{display:block;max-width:100%;font-family:system-ui,sans-serif}
"""
CHART_W, CHART_H, PAD = 640, 220, 40
LINE_COLORS = {"accuracy": "#1f5fbf", "f1_macro": "#c2571a", "balanced_accuracy": "#2f8f3a"}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _rows(pairs: list[tuple[str, object]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)


def _label(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "\u2026"


def _columns(text: str) -> int:
    """Monospace cells ``text`` takes: East Asian wide characters take two."""
    return sum(2 if east_asian_width(c) in "WF" else 1 for c in text)


def confusion_svg(matrix: list[list[int]], classes: list[object]) -> str:
    """An n x n grid, darker where more rows fall; true class down, predicted across.

    Class labels are set in a monospace font, so their width is known without a browser:
    the margins are sized from the longest (at most :data:`MAX_LABEL` characters) and labels
    fit inside the drawing; column labels slant up-left from their column.
    """
    n = len(matrix)
    names = [str(c) for c in classes] if len(classes) == n else [str(i) for i in range(n)]
    label_width = EM * FONT * max((_columns(_label(name)) for name in names), default=1)
    slant = label_width * 0.7072  # the width and the height of a label turned 45 degrees
    left = TITLE + label_width + 8
    top = TITLE + slant + FONT + 4
    width, height = left + n * CELL + 10, top + n * CELL + 10
    grid = n * CELL
    peak = max((v for row in matrix for v in row), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="confusion matrix">',
        f'<text class="axis" x="{left + grid / 2:.1f}" y="14" text-anchor="middle" '
        'font-size="12">predicted</text>',
        f'<text class="axis" x="12" y="{top + grid / 2:.1f}" text-anchor="middle" '
        f'font-size="12" transform="rotate(-90 12 {top + grid / 2:.1f})">actual</text>',
    ]
    for i, name in enumerate(names):
        mid = i * CELL + CELL / 2
        tip = f"<title>{_e(name)}</title>{_e(_label(name))}"
        x, y = left + mid - 4, top - 6
        parts.append(
            f'<text class="label predicted" x="{x:.1f}" y="{y:.1f}" text-anchor="end" '
            f'font-size="{FONT}" transform="rotate(45 {x:.1f} {y:.1f})">{tip}</text>'
        )
        parts.append(
            f'<text class="label actual" x="{left - 6:.1f}" y="{top + mid + 4:.1f}" '
            f'text-anchor="end" font-size="{FONT}">{tip}</text>'
        )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            shade = value / peak
            fill = f"rgb({int(255 - 200 * shade)},{int(255 - 150 * shade)},255)"
            ink = "#fff" if shade > 0.6 else "#000"
            x, y = left + j * CELL, top + i * CELL
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{CELL}" height="{CELL}" fill="{fill}" '
                'stroke="#888"/>'
                f'<text x="{x + CELL / 2:.1f}" y="{y + CELL / 2 + 5:.1f}" text-anchor="middle" '
                f'font-size="14" fill="{ink}">{int(value)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


SPARK_WIDTH = 160
SPARK_HEIGHT = 28


def shares_svg(shares: list[float]) -> str:
    """The share of rows in each bin as a small bar chart, the tallest bar full height."""
    n = max(len(shares), 1)
    peak = max(shares, default=0.0) or 1.0
    width = SPARK_WIDTH / n
    bars = "".join(
        f'<rect x="{i * width:.1f}" y="{SPARK_HEIGHT * (1 - share / peak):.1f}" '
        f'width="{max(width - 1, 1):.1f}" height="{SPARK_HEIGHT * share / peak:.1f}" '
        f'fill="#58a"><title>{share:.1%}</title></rect>'
        for i, share in enumerate(shares)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
        f'role="img" aria-label="share of rows per bin">{bars}</svg>'
    )


def profile_section(m: ModelMetadata) -> str:
    """What drift monitoring compares recent inputs with: each feature's bins, the classes."""
    p = m.reference_profile
    if p is None:
        return "<p>No reference profile: drift is not checked for this version.</p>"
    rows = "".join(
        f"<tr><td>{_e(f.name)}</td><td>{len(f.shares)}</td>"
        f"<td>{_e(_edges(f.edges))}</td><td>{shares_svg(f.shares)}</td></tr>"
        for f in p.features
    )
    classes = ", ".join(f"{name} {share:.1%}" for name, share in p.classes.items())
    return (
        f"<p>{p.rows} rows of the {_e(p.source)}. Predicted classes: {_e(classes or 'none')}.</p>"
        "<table><tr><th>feature</th><th>bins</th><th>inner edges</th><th>rows per bin</th></tr>"
        f"{rows}</table>"
    )


def _edges(edges: list[float]) -> str:
    if not edges:
        return "one bin"
    shown = ", ".join(f"{e:g}" for e in edges[:12])
    return shown + (", ..." if len(edges) > 12 else "")


def _trigger(m: ModelMetadata) -> str:
    if m.trigger is None:
        return "not recorded"
    features = (m.trigger_detail or {}).get("features")
    if features:
        return f"{m.trigger} ({', '.join(map(str, features))})"
    return m.trigger


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def quality_svg(points: list[dict]) -> str:
    """Each metric of the live-quality history over time, on a 0 to 1 scale."""
    times = [float(p["at"]) for p in points]
    start, span = min(times), (max(times) - min(times)) or 1.0
    inner_w, inner_h = CHART_W - 2 * PAD, CHART_H - 2 * PAD

    def xy(at: float, value: float) -> str:
        x = PAD + (at - start) / span * inner_w if len(points) > 1 else PAD + inner_w / 2
        return f"{x:.1f},{PAD + (1 - value) * inner_h:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" '
        f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="live quality over time">'
    ]
    for level in (0.0, 0.5, 1.0):
        y = PAD + (1 - level) * inner_h
        parts.append(
            f'<line x1="{PAD}" y1="{y:.1f}" x2="{CHART_W - PAD}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{level:g}</text>'
        )
    parts.append(
        f'<text x="{PAD}" y="{CHART_H - 12}" font-size="11">{_e(_when(start))}</text>'
        f'<text x="{CHART_W - PAD}" y="{CHART_H - 12}" text-anchor="end" font-size="11">'
        f"{_e(_when(max(times)))} UTC</text>"
    )
    for i, metric in enumerate(m for m in METRICS if all(m in p for p in points)):
        color = LINE_COLORS[metric]
        coords = [xy(float(p["at"]), float(p[metric])) for p in points]
        if len(coords) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                f'points="{" ".join(coords)}"/>'
            )
        parts += [
            f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.5" fill="{color}"/>'
            for c in coords
        ]
        parts.append(
            f'<text x="{PAD + i * 170}" y="16" font-size="12" fill="{color}">● {_e(metric)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _quality_section(points: list[dict]) -> str:
    if not points:
        return (
            "<p>No labelled predictions yet: send true labels to "
            "<code>POST /models/{name}/feedback</code>.</p>"
        )
    last = points[-1]
    latest = _rows(
        [
            ("as of (UTC)", _when(float(last["at"]))),
            ("labelled predictions in the window", last["labelled"]),
            *((m, f"{last[m]:.4f}") for m in METRICS if m in last),
        ]
    )
    return f'<table>{latest}</table><div class="chart">{quality_svg(points)}</div>'


def _data_rows(m: ModelMetadata) -> list[tuple[str, object]]:
    """What a trained version learned from, and why it was trained."""
    rows: list[tuple[str, object]] = []
    if m.trigger:
        rows.append(("trigger", m.trigger))
    if m.data is not None:
        base, feedback = m.data.base, m.data.feedback
        rows += [
            (
                "base data",
                f"{base.rows} rows from {base.source or '?'} (sha256 {base.fingerprint})",
            ),
            (
                "labelled feedback",
                f"{feedback.rows} rows, labels until {feedback.until or '-'} "
                f"(sha256 {feedback.fingerprint})",
            ),
        ]
    return rows


def _gate_rows(g) -> list[tuple[str, object]]:
    production = "none" if g.production is None else f"{g.production:.4f}"
    rows: list[tuple[str, object]] = [
        ("reason", g.reason),
        ("decided on", g.decided_on),
        ("metric", g.metric),
        ("held-out split: candidate", f"{g.candidate:.4f}"),
        ("held-out split: production (its own)", production),
        ("production version", g.production_version or "none"),
        ("margin", g.margin),
    ]
    if g.feedback_rows:
        rows += [
            ("recent labelled feedback: rows", g.feedback_rows),
            ("recent labelled feedback: candidate", _score(g.feedback_candidate)),
            ("recent labelled feedback: production", _score(g.feedback_production)),
        ]
    return rows


def _score(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


def _source_rows(m: ModelMetadata) -> list[tuple[str, object]]:
    """A registered version: the file it came from (it was fitted elsewhere)."""
    if m.source is None:
        return []
    return [
        ("registered from", f"{m.source.path} ({m.source.format})"),
        ("source file sha256", m.source.sha256),
    ]


def render_card(metadata: ModelMetadata, quality: list[dict] | None = None) -> str:
    """The model card of one version as a complete HTML document; ``quality``: its
    live-quality history (core/quality.py)."""
    m = metadata
    title = f"{m.name} v{m.version}"
    overview = _rows(
        [
            ("model", m.name),
            ("version", m.version),
            ("trainer", m.trainer),
            ("trained at (UTC)", m.trained_at),
            ("trigger", _trigger(m)),
            ("classes", ", ".join(map(str, m.classes))),
            ("rows (train / test)", f"{m.n_train} / {m.n_test}"),
            (
                "python / scikit-learn / joblib / numpy",
                f"{m.python_version} / {m.sklearn_version} / {m.joblib_version} / "
                f"{m.numpy_version or '?'}",
            ),
            ("artifact", f"{m.artifact_file} ({m.artifact_format})"),
            ("artifact sha256", m.artifact_sha256),
            ("data fingerprint (sha256)", m.data_fingerprint or "none"),
            *_data_rows(m),
            *_source_rows(m),
        ]
    )
    features = "".join(f"<tr><td>{_e(f.name)}</td><td>{_e(f.type)}</td></tr>" for f in m.features)
    metrics = _rows([(k, f"{v:.4f}") for k, v in sorted(m.metrics.items())])
    where = "held-out split" if m.source is None else "evaluation set"
    params = _rows([(k, v) for k, v in sorted(m.params.items())])
    if m.gate is None:
        gate = "<p>No gate decision recorded.</p>"
    else:
        g = m.gate
        gate = (
            f'<p class="{_e(g.decision)}">{_e(g.decision)}</p><table>{_rows(_gate_rows(g))}</table>'
        )

    matrix = (
        f'<div class="matrix">{confusion_svg(m.confusion_matrix, m.classes)}</div>'
        if m.confusion_matrix
        else "<p>No confusion matrix recorded.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Model card: {_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Model card: {_e(title)}</h1>"
        f"<h2>Overview</h2><table>{overview}</table>"
        f"<h2>Promotion gate</h2>{gate}"
        f"<h2>Live quality (labelled feedback)</h2>{_quality_section(quality or [])}"
        f"<h2>Metrics ({_e(where)})</h2><table>{metrics}</table>"
        f"<h2>Confusion matrix ({_e(where)})</h2>{matrix}"
        f"<h2>Features</h2><table><tr><th>name</th><th>type</th></tr>{features}</table>"
        f"<h2>Reference profile (for drift monitoring)</h2>{profile_section(m)}"
        f"<h2>Parameters</h2><table>{params}</table>"
        "</body></html>\n"
    )


def write_card(store: ModelStore, version: int) -> ModelMetadata:
    """(Re)write ``card.html`` of ``version`` from its current metadata and live quality."""
    meta = store.metadata(version)
    quality = read_history(store, version)
    store.write_file(version, CARD_FILE, render_card(meta, quality).encode("utf-8"))
    return meta


def card_path(store: ModelStore, version: int) -> Path | None:
    """Where the card lives on disk, for backends that have a local folder."""
    root = getattr(store.storage, "root", None)
    return None if root is None else Path(root) / store.model_name / str(version) / CARD_FILE
