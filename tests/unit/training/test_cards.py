"""Model cards: self-contained HTML, escaped values, an SVG confusion matrix."""

from __future__ import annotations

import re

from core.settings import get_settings
from core.store import GateDecision, ModelMetadata, open_store
from tests.factories import metadata
from training.cards import card_path, confusion_svg, render_card, write_card
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
