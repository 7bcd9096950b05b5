"""Load generators: wrk where installed, else a small asyncio HTTP/1.1 client in its own process.

Both hold N keep-alive connections, each sending the next request when the last answer
arrives (closed loop), and report requests/s and latency percentiles in milliseconds. Given
several URLs (the same path on several gateway processes), the connections are spread evenly
over them and the percentiles are those of all requests together. Shared by
`make bench` (benchmarks/run.py) and the soak test (tests/integration/test_faults.py), so the
soak's rate compares with the benchmark's.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\\"p50\\": %f, \\"p99\\": %f, \\"requests\\": %d, \\"non2xx\\": %d, \\"errors\\": %d}\\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""  # noqa: E501


def generator_name() -> str:
    return "wrk" if shutil.which("wrk") else "python-asyncio"


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()
    return float(value) * _UNITS[unit]


def url_list(url: str | Sequence[str]) -> list[str]:
    """One URL or several with the same path (each a gateway process)."""
    urls = [url] if isinstance(url, str) else list(url)
    paths = {urlsplit(u)._replace(netloc="").geturl() for u in urls}
    if not urls or len(paths) != 1:
        raise ValueError(f"give one URL or several with the same path: {urls}")
    return urls


def wrk_script(body: bytes, headers: dict, urls: list[str]) -> str:
    """wrk's Lua: the request, the summary line, and with several URLs one per thread in turn
    (wrk connects each thread to ``thread.addr``; the URL on its command line gives the path)."""
    lua = "wrk.method = 'POST'\nwrk.body = [==[" + body.decode() + "]==]\n"
    lua += "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    if len(urls) > 1:
        targets = ", ".join(
            f"{{{json.dumps(urlsplit(u).hostname)}, {json.dumps(str(urlsplit(u).port))}}}"
            for u in urls
        )
        lua += (
            f"local targets = {{{targets}}}\nlocal threads = 0\n"
            "function setup(thread)\n"
            "  local target = targets[threads % #targets + 1]\n"
            "  threads = threads + 1\n"
            "  thread.addr = wrk.lookup(target[1], target[2])[1]\n"
            "end\n"
        )
    return lua + _DONE


def run_wrk(
    url: str | Sequence[str], body: bytes, headers: dict, connections: int, seconds: float
) -> dict:
    urls = url_list(url)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(wrk_script(body, headers, urls))
    # one thread per URL (wrk gives each thread connections / threads), else two
    threads = len(urls) if len(urls) > 1 else max(1, min(2, connections))
    duration = f"{max(1, round(seconds))}s"
    out = subprocess.run(  # noqa: S603 - wrk with arguments built here, no shell
        [shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}",
         "--timeout", "10s", "-s", fh.name, urls[0]],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    Path(fh.name).unlink()
    stats = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {
        "rps": rps,
        "p50_ms": stats["p50"],
        "p99_ms": stats["p99"],
        "requests": stats["requests"],
        "errors": stats["non2xx"] + stats["errors"],
    }


async def _client(host, port, request: bytes, stop_at: float, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            if not status_line.split(b" ")[1].startswith(b"2"):
                errors.append(status_line)
    finally:
        writer.close()


async def _python_load(urls, body, headers, connections, seconds) -> dict:
    targets = [urlsplit(u) for u in url_list(urls)]
    parts = targets[0]
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.hostname}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors: list = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_client(t.hostname, t.port, request, stop_at, latencies, errors)
          for t in (targets[i % len(targets)] for i in range(connections)))
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "requests": len(latencies),
        "errors": len(errors),
    }


def run_python(
    url: str | Sequence[str], body: bytes, headers: dict, connections: int, seconds: float
) -> dict:
    """Run the asyncio generator in a separate process, so it does not share the GIL."""
    args = json.dumps([url_list(url), body.decode(), headers, connections, seconds])
    out = subprocess.run(  # noqa: S603 - this module in this interpreter, no shell
        [sys.executable, "-m", "scripts.load", args],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    return json.loads(out)


def run_load(
    url: str | Sequence[str], body: bytes, headers: dict, connections: int, seconds: float
) -> dict:
    """``connections`` closed-loop connections for ``seconds``, spread over ``url``'s URLs."""
    runner = run_wrk if generator_name() == "wrk" else run_python
    return runner(url, body, headers, connections, seconds)


if __name__ == "__main__":
    url, body, headers, connections, seconds = json.loads(sys.argv[1])
    result = asyncio.run(_python_load(url, body.encode(), headers, connections, seconds))
    sys.stdout.write(json.dumps(result))
