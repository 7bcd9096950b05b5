"""The pages a person opens, in a real browser: /docs, a model card, Flower.

Playwright drives Debian's ``chromium`` (``apt-get install chromium``; Playwright downloads no
browser), or the browser ``$CHROMIUM`` names (CI's Ubuntu runners have Google Chrome: Ubuntu's
chromium package is a snap). The browser may only reach the stack: any other request (a CDN)
is aborted, as on a network without internet. Screenshots are kept in test-artifacts/pages/
(git-ignored) and their paths printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from core.messages import PREDICT_TASK
from core.store import FeatureSpec, ModelMetadata
from scripts import commands
from scripts.processes import ROOT, Process, free_port, wait_until
from tests.integration.stack import PREDICT_KEY, SEED_BODY
from training.cards import render_card

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "pages"
FLOWER_PASSWORD = "pages-test-password"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"chromium is required for the browser tests and was not found ({CHROMIUM}).\n"
            "Install it: sudo apt-get install -y chromium",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def offline_page(context, allowed: str):
    """A page whose requests to anything but ``allowed`` fail, as without internet."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    def only_allowed(route):
        if route.request.url.startswith(allowed):
            route.continue_()
        else:
            outside.append((route.request.resource_type, route.request.url))
            route.abort()

    page.route("**/*", only_allowed)
    return page, outside


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")  # noqa: T201 - where to look
    return path


def test_docs_authorize_then_try_out_predict(stack, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page, outside = offline_page(context, stack.url)
    try:
        page.goto(f"{stack.url}/docs")
        page.locator(".auth-wrapper .authorize").click()
        dialog = page.locator(".modal-ux")
        dialog.locator("input").fill(PREDICT_KEY)
        dialog.locator("button.authorize").click()
        expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
        dialog.get_by_role("button", name="Close", exact=True).click()

        operation = page.locator("#operations-predict-predict_predict_post")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator('tr[data-param-name="wait"] input').fill("10")
        operation.locator("textarea.body-param__text").fill(json.dumps(SEED_BODY))
        operation.locator("button.execute").click()

        answered = operation.locator(".live-responses-table tr.response")
        status = answered.locator(".response-col_status").first
        expect(status).to_have_text(re.compile(r"^\s*20[02]"), timeout=TIMEOUT_MS)
        answer = answered.locator(".response-col_description pre").first
        expect(answer).to_contain_text("integration-test-id")
        expect(operation.locator(".curl-command")).to_contain_text(f"X-API-Key: {PREDICT_KEY}")
        screenshot(page, "docs-try-predict")
    finally:
        context.close()
    assert outside == []  # every script and style came from the gateway


def test_redoc_renders_offline(stack, browser):
    from playwright.sync_api import expect

    context = browser.new_context()
    page, outside = offline_page(context, stack.url)
    try:
        page.goto(f"{stack.url}/redoc")
        expect(page.locator("h1").first).to_contain_text("Two MLOps Toolset")
        expect(page.get_by_text("POST /predict").first).to_be_attached()
        screenshot(page, "redoc")
    finally:
        context.close()
    # ReDoc's own "API docs by Redocly" logo is an image on its CDN: missing, nothing breaks.
    assert {kind for kind, _ in outside} <= {"image"}, outside


MATRIX_GEOMETRY = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  const svg = document.querySelector('.matrix svg');
  return {
    container: box(document.querySelector('.matrix')),
    svg: box(svg),
    grid: box(svg.querySelector('rect')),
    predicted: [...svg.querySelectorAll('text.label.predicted')].map(box),
    actual: [...svg.querySelectorAll('text.label.actual')].map(box),
    texts: [...svg.querySelectorAll('text')].map(box),
  };
}"""


def check_matrix_is_legible(page) -> None:
    """Every text inside the drawing, the drawing inside its container, no label on a cell."""
    geometry = page.evaluate(MATRIX_GEOMETRY)
    svg, container, first_cell = geometry["svg"], geometry["container"], geometry["grid"]
    assert svg["right"] <= container["right"] + 0.5 and svg["left"] >= container["left"] - 0.5
    for text in geometry["texts"]:
        assert svg["left"] <= text["left"] and text["right"] <= svg["right"], (text, svg)
        assert svg["top"] <= text["top"] and text["bottom"] <= svg["bottom"], (text, svg)
    assert all(label["bottom"] <= first_cell["top"] for label in geometry["predicted"])
    assert all(label["right"] <= first_cell["left"] for label in geometry["actual"])
    assert geometry["predicted"] and len(geometry["predicted"]) == len(geometry["actual"])


def test_model_card_confusion_matrix_labels_fit(stack, browser):
    context = browser.new_context(extra_http_headers={"X-API-Key": PREDICT_KEY})
    page, outside = offline_page(context, stack.url)
    try:
        response = page.goto(f"{stack.url}/models/1/card")
        assert response is not None and response.status == 200
        check_matrix_is_legible(page)
        screenshot(page, "model-card")
    finally:
        context.close()
    assert outside == []


def long_label_card() -> str:
    """A card whose class names are long (one longer than a label shows) and wide."""
    classes = ["Iris setosa (Linnaeus)", "WWWWWWWWWWWWWWWWWWWWWWWW", "a" * 60, "x"]
    return render_card(
        ModelMetadata(
            name="long-labels",
            version=1,
            trainer="csv",
            features=[FeatureSpec(name="f", type="float")],
            classes=classes,
            confusion_matrix=[[5, 1, 0, 0], [0, 7, 1, 0], [0, 0, 6, 2], [1, 0, 0, 9]],
            metrics={"accuracy": 0.84},
            trained_at="2026-01-01T00:00:00+00:00",
            data_fingerprint="0" * 64,
            python_version="3.11",
            sklearn_version="1.5",
            joblib_version="1.4",
            artifact_file="model.joblib",
        )
    )


def test_model_card_long_class_labels_fit(browser):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.set_content(long_label_card())
        check_matrix_is_legible(page)
        assert page.locator("text.label.actual title").nth(2).text_content() == "a" * 60
        screenshot(page, "model-card-long-labels")
    finally:
        context.close()


def test_flower_login_shows_a_predict_task(stack, browser):
    from playwright.sync_api import expect

    port = free_port()
    env = stack.env(MLOPS_FLOWER__PORT=str(port), MLOPS_FLOWER__PASSWORD=FLOWER_PASSWORD)
    flower = Process("flower", commands.flower(), env, stack.logs).start()
    base = f"http://127.0.0.1:{port}"
    auth = ("admin", FLOWER_PASSWORD)
    try:
        wait_until(
            lambda: httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200,
            60,
            f"flower on port {port}",
        )

        # Flower turns the workers' task events on every few seconds; events are not kept,
        # so predict until one of them is in Flower's task list.
        def predict_listed() -> bool:
            with stack.client() as client:
                assert client.post("/predict?wait=5", json=SEED_BODY).status_code == 200
            tasks = httpx.get(f"{base}/api/tasks", auth=auth, timeout=5).json()
            # The gateway names each message after its model: mlops.predict_batch[iris]
            return any(task["name"].startswith(PREDICT_TASK) for task in tasks.values())

        wait_until(predict_listed, 60, "a predict task in Flower", interval=1)

        wrong = browser.new_context(http_credentials={"username": "admin", "password": "no"})
        refused = wrong.new_page().goto(f"{base}/tasks")
        assert refused is not None and refused.status == 401
        wrong.close()

        context = browser.new_context(
            http_credentials={"username": auth[0], "password": auth[1]},
            viewport={"width": 1400, "height": 900},
        )
        page, outside = offline_page(context, base)
        try:
            page.goto(f"{base}/tasks")
            expect(page.locator("#tasks-table").get_by_text(PREDICT_TASK).first).to_be_visible()
            screenshot(page, "flower-tasks")
        finally:
            context.close()
        assert outside == []
    finally:
        flower.stop()
