"""`make security`: bandit on the source, then pip-audit on the installed dependencies.

1. bandit -c pyproject.toml -r core app workers training scripts flowerconfig.py -ll
   (medium and high severity). Any finding fails.
2. pip-audit --strict --skip-editable on this environment (the project itself is installed
   editable and is not on PyPI). A known vulnerability fails.

pip-audit needs its vulnerability service (PyPI's JSON API). When that service cannot be
reached, or cannot tell it about an installed release (a mirror or proxy that only serves the
package index answers "not found"), the audit did not happen: this script says
"pip-audit: SKIPPED ... this is NOT a clean result" and does not fail for it, so `make
security` stays usable offline. With --require-audit (CI) a skipped audit fails too.
Any other pip-audit error fails: a clean result is only printed when pip-audit produced one.

Exit status: 0 clean (or audit skipped without --require-audit), 1 findings or errors.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOURCES = ["core", "app", "workers", "training", "scripts", "flowerconfig.py"]

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


def classify_audit_failure(output: str) -> tuple[str, str]:
    """('findings' | 'skipped' | 'error', detail) for a pip-audit run that exited non-zero."""
    if FOUND_VULNS.search(output):
        return "findings", "known vulnerabilities (listed above)"
    for marker in CONNECTION_MARKERS:
        if marker in output:
            line = next((ln for ln in output.splitlines() if marker in ln), marker)
            return "skipped", line.strip()
    match = NOT_FOUND.search(output)
    if match:  # the service had no record of an installed release: that one was not audited
        return "skipped", (
            f"the vulnerability service has no record of {match.group(1)} {match.group(2)} "
            "here (a mirror or proxy, or a package not on PyPI), so it was not audited"
        )
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
