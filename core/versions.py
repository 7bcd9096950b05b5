"""Version strings: the API version is the installed package's version (git tag in releases)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "two-mlops"


def api_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


API_VERSION = api_version()
