"""Model cards: self-contained HTML, escaped values, an SVG confusion matrix."""

from __future__ import annotations

import re

from core.quality import append_history
from core.settings import get_settings
from core.store import DataPart, DataVersion, GateDecision, ModelMetadata, open_store
from tests.factories import metadata
from training.cards import card_path, confusion_svg, quality_svg, render_card, write_card
from training.pipeline import run_training

SHOWN = {
    "name": "iris",
    "version": 3,
    "metrics": {"accuracy": 0.9667},
    "classes": ["setosa", "<b>evil</b>"],
    "data_fingerprint": "f" * 64,
    "sklearn_version": "1.5",
    "joblib_version": "1.4",
    "confusion_matrix": [[9, 1], [0, 10]],
    "gate": GateDecision(
        decision="rejected", reason="accuracy <script>", metric="accuracy", candidate=0.5,
        production=0.9, production_version=2, margin=0.0,
    ),
}  # fmt: skip


def meta(**changes) -> ModelMetadata:
    """A version to show, with markup in a class name and in the gate's reason."""
    return metadata(("petal_length",), **{**SHOWN, **changes})


def test_training_card_is_self_contained_and_escaped():
    page = render_card(meta())
    assert page.startswith("<!DOCTYPE html>")
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=", page)  # no external files
    assert "f" * 64 in page and "0.9667" in page and "rejected" in page
    assert "iris v3" in page


def test_training_card_confusion_matrix_svg():
    svg = confusion_svg([[9, 1], [0, 10]], ["a", "b"])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<rect") == 4
    assert [int(v) for v in re.findall(r">(\d+)</text>", svg)] == [9, 1, 0, 10]


def test_training_card_without_gate_or_matrix():
    page = render_card(meta(gate=None, confusion_matrix=None))
    assert "No gate decision recorded" in page and "No confusion matrix" in page


def test_training_write_card_refreshes_from_metadata():
    settings = get_settings()
    outcome = run_training(settings)
    store = open_store(settings)
    path = card_path(store, outcome.version)
    assert path is not None and path.is_file()
    path.write_text("stale")
    write_card(store, outcome.version)
    assert "Model card: iris v1" in path.read_text()


def test_training_card_shows_the_reference_profile_and_the_trigger():
    from core.monitoring import FeatureProfile, ReferenceProfile

    profile = ReferenceProfile(
        rows=120,
        source="training split",
        features=[
            FeatureProfile(name="<petal>", edges=[1.5, 4.35], shares=[0.25, 0.5, 0.25], sample=[])
        ],
        classes={"setosa": 0.5, "<b>evil</b>": 0.5},
    )
    page = render_card(
        meta(reference_profile=profile, trigger="drift", trigger_detail={"features": ["<petal>"]})
    )
    assert "120 rows of the training split" in page and "setosa 50.0%" in page
    assert "&lt;petal&gt;" in page and "<petal>" not in page and "1.5, 4.35" in page
    bars = re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', page)
    assert [float(h) for _, h in bars][-3:] == [14.0, 28.0, 14.0]  # 25 %, 50 % (the peak), 25 %
    assert "drift (&lt;petal&gt;)" in page


def test_training_card_of_a_version_without_a_profile():
    page = render_card(meta())
    assert "No reference profile" in page and "not recorded" in page


def test_the_card_shows_both_gate_comparisons_and_the_data_version():
    gate = SHOWN["gate"].model_copy(
        update={"feedback_rows": 40, "feedback_candidate": 0.875, "feedback_production": 0.25,
                "decided_on": "recent feedback"}
    )  # fmt: skip
    data = DataVersion(
        base=DataPart(fingerprint="b" * 64, rows=150, source="iris"),
        feedback=DataPart(fingerprint="c" * 64, rows=40, until="2026-01-02T03:04:05+00:00"),
    )
    page = render_card(meta(gate=gate, data=data, trigger="labels"))
    assert "held-out split: candidate" in page and "0.5000" in page and "0.9000" in page
    assert "recent labelled feedback: candidate" in page and "0.8750" in page
    assert "0.2500" in page and "recent feedback" in page
    assert "b" * 64 in page and "c" * 64 in page and "2026-01-02T03:04:05" in page
    assert "labels" in page


def test_the_live_quality_chart_draws_each_metric_over_time():
    points = [
        {"at": 1000.0 + i * 60, "labelled": 10 + i, "accuracy": a, "f1_macro": a / 2,
         "balanced_accuracy": a}
        for i, a in enumerate([0.5, 0.75, 1.0])
    ]  # fmt: skip
    svg = quality_svg(points)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 3 and svg.count("<circle") == 9
    # accuracy from 0.5 to 1.0: its y falls from the middle to the top of the plot
    accuracy = re.search(r'stroke="#1f5fbf" stroke-width="2" points="([^"]+)"', svg).group(1)
    ys = [float(pair.split(",")[1]) for pair in accuracy.split()]
    assert ys[0] > ys[1] > ys[2]
    page = render_card(meta(), points)
    assert "Live quality" in page and "12" in page and "1.0000" in page
    assert not re.search(r"(src|href)=", page)


def test_a_card_without_labels_says_how_to_send_them():
    assert "No labelled predictions yet" in render_card(meta())


def test_write_card_draws_the_stored_history():
    settings = get_settings()
    store = open_store(settings)
    version = run_training(settings).version
    append_history(store, version, {"at": 1.0, "labelled": 3, "accuracy": 0.25})
    write_card(store, version)
    assert "0.2500" in card_path(store, version).read_text()
