"""app/api/deps.py: the API-key security scheme is declared where a key is required, only there."""

from __future__ import annotations

from app.api.deps import API_KEY
from app.main import create_app
from core.settings import get_settings

# Open: no key needed (on the readiness probes a key is optional: it shows the reasons).
OPEN = {
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/version"),
    ("get", "/v2"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
}


def test_every_operation_but_the_open_ones_declares_the_api_key_scheme():
    spec = create_app(get_settings()).openapi()
    [(name, scheme)] = spec["components"]["securitySchemes"].items()
    assert scheme["type"] == "apiKey" and scheme["in"] == "header" and scheme["name"] == API_KEY
    operations = {
        (method, path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    assert operations.keys() > OPEN
    for key, operation in operations.items():
        expected = [] if key in OPEN else [{name: []}]
        assert operation.get("security", []) == expected, key
    ready = {p["name"] for p in operations[("get", "/ready")]["parameters"]}
    assert API_KEY in ready  # documented as an optional header instead
