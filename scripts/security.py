"""`make security`: bandit on the source, then pip-audit on the installed dependencies.

1. bandit -c pyproject.toml -r core app workers training scripts flowerconfig.py -ll
   (medium and high severity). Any finding fails.
2. pip-audit --strict --skip-editable on this environment (the project itself is installed
   editable and is not on PyPI). A known vulnerability fails.

pip-audit needs its vulnerability service (PyPI's JSON API). When that service cannot be
reached, or answers 404 for releases that PyPI does list (a mirror or proxy that only serves
the package index), the audit did not happen: this script says
"pip-audit: SKIPPED ... this is NOT a clean result" and does not fail for it, so `make
security` stays usable offline. With --require-audit (CI) a skipped audit fails too.
Any other pip-audit error fails: a clean result is only printed when pip-audit produced one.

Exit status: 0 clean (or audit skipped without --require-audit), 1 findings or errors.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOURCES = ["core", "app", "workers", "training", "scripts", "flowerconfig.py"]
PYPI_JSON = "https://pypi.org/pypi/{name}/json"
PYPI_RELEASE_JSON = "https://pypi.org/pypi/{name}/{version}/json"
HTTP_OK = 200

# pip-audit's messages when the service cannot be reached (requests / urllib3 errors).
CONNECTION_MARKERS = (
    "VulnServiceConnectionError",
    "your network may be blocking this service",
    "ConnectionError",
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Connection refused",
    "Read timed out",
    "timed out",
    "SSLError",
    "ProxyError",
)
NOT_FOUND = re.compile(r"Dependency not found on PyPI and could not be audited: (\S+) \(([^)]+)\)")
FOUND_VULNS = re.compile(r"Found \d+ known vulnerabilit")


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    say("$ " + " ".join(args))
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def run_bandit() -> bool:
    """True when bandit ran and found no medium or high severity issue."""
    sources = [s for s in SOURCES if (ROOT / s).exists()]
    result = run([tool("bandit"), "-c", "pyproject.toml", "-r", *sources, "-ll", "-q"])
    output = (result.stdout + result.stderr).strip()
    if output:
        say(output)
    if result.returncode == 0:
        say("bandit: no medium or high severity issues")
        return True
    say(f"bandit: FAILED (exit {result.returncode}): fix the issues above")
    return False


def _get_json(url: str) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        # A fixed https://pypi.org URL (no user-supplied scheme).
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310  # nosec B310
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def service_broken(name: str, version: str) -> str | None:
    """Why pip-audit's "not found on PyPI" is the service's fault, or None if it is real."""
    try:
        status, _ = _get_json(PYPI_RELEASE_JSON.format(name=name, version=version))
        if status == HTTP_OK:  # the release is there now: pip-audit's error stands
            return None
        _, project = _get_json(PYPI_JSON.format(name=name))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{PYPI_RELEASE_JSON.format(name=name, version=version)}: {exc}"
    if project is not None and version in project.get("releases", {}):
        return (
            f"pypi.org lists {name} {version} but answers {status} for /pypi/{name}/{version}/json,"
            " the endpoint pip-audit reads: a mirror or proxy that does not serve it"
        )
    return None


def classify_audit_failure(output: str) -> tuple[str, str]:
    """('findings' | 'skipped' | 'error', detail) for a pip-audit run that exited non-zero."""
    if FOUND_VULNS.search(output):
        return "findings", "known vulnerabilities (listed above)"
    for marker in CONNECTION_MARKERS:
        if marker in output:
            line = next((ln for ln in output.splitlines() if marker in ln), marker)
            return "skipped", line.strip()
    match = NOT_FOUND.search(output)
    if match:
        reason = service_broken(match.group(1), match.group(2))
        if reason:
            return "skipped", reason
        return "error", f"{match.group(1)} {match.group(2)} is not on PyPI, so it was not audited"
    return "error", "pip-audit failed (output above)"


def run_pip_audit() -> str:
    """'clean', 'findings', 'skipped' (service unreachable) or 'error'."""
    result = run(
        [tool("pip-audit"), "--strict", "--skip-editable", "--progress-spinner", "off", "--desc"]
    )
    output = (result.stdout + result.stderr).strip()
    if output:
        say(output)
    if result.returncode == 0:
        say("pip-audit: no known vulnerabilities in the installed dependencies")
        return "clean"
    kind, detail = classify_audit_failure(output)
    if kind == "skipped":
        say(
            "pip-audit: SKIPPED — could not reach the vulnerability service "
            f"({detail}); this is NOT a clean result"
        )
    else:
        say(f"pip-audit: FAILED: {detail}")
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.security",
        description="bandit on the source, then pip-audit on the installed dependencies",
    )
    parser.add_argument(
        "--require-audit",
        action="store_true",
        help="fail when pip-audit cannot reach its vulnerability service (use in CI)",
    )
    args = parser.parse_args(argv)
    bandit_ok = run_bandit()
    say()
    audit = run_pip_audit()
    say()
    failed = not bandit_ok or audit in ("findings", "error")
    if audit == "skipped" and args.require_audit:
        say("security: FAILED — the dependency audit was skipped and --require-audit was given")
        return 1
    if failed:
        say("security: FAILED")
        return 1
    if audit == "skipped":
        say("security: bandit clean; dependency audit SKIPPED — NOT a clean result")
        return 0
    say("security: OK — bandit clean, no known vulnerabilities in the dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
