"""The gateway's edge, on the real server (`python -m app`): connection deadlines and caps,
slow bodies, what production shows to anonymous callers, TLS.

Raw sockets play the slow and idle clients; each test starts its own gateway with the limits
it needs (lowered so a test takes seconds) against one Redis, model and worker.
"""

from __future__ import annotations

import json
import resource
import selectors
import shutil
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from scripts import commands
from scripts.processes import Process, free_port, wait_until
from tests.factories import value
from tests.integration.stack import PREDICT_KEY, SEED_BODY, Stack, running

pytestmark = [pytest.mark.integration, pytest.mark.serial]

SLOW_SOCKETS = 2000
HEADER_TIMEOUT = 5.0
BODY_TIMEOUT = 3.0
PARTIAL_HEAD = b"POST /predict HTTP/1.1\r\nHost: edge\r\nContent-Type: appli"
BODY = json.dumps(SEED_BODY).encode()
SLOW_BODY_HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
    b"X-API-Key: %s\r\nContent-Length: %d\r\n\r\n" % (PREDICT_KEY.encode(), len(BODY))
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """Redis, a model and a worker; each test starts the gateway it needs."""

    def start(stack: Stack) -> None:
        stack.start_redis()
        trained = stack.train()
        assert trained.returncode == 0, trained.stderr
        stack.start_worker("worker0")

    with running(Stack(tmp_path_factory.mktemp("edge")), start) as stack:
        yield stack


@pytest.fixture(autouse=True, scope="module")
def _enough_file_descriptors():
    """This process holds SLOW_SOCKETS sockets at once: raise its soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_gateway(stack: Stack, environment: str = "testing", **gateway: object) -> Process:
    """(Re)start the gateway with ``gateway.*`` settings, e.g. ``max_connections=50``."""
    if "gateway" in stack.services:
        stack.services.pop("gateway").stop()
    env = {f"MLOPS_GATEWAY__{key.upper()}": str(value) for key, value in gateway.items()}
    return stack.start_gateway(MLOPS_ENV=environment, **env)


def connect(stack: Stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=10)


def wait_closed(sockets: list[socket.socket], timeout: float) -> dict[socket.socket, tuple]:
    """Read every socket until the gateway closes it: ``{sock: (closed_at, bytes_received)}``.

    Fails if one is still open after ``timeout`` seconds.
    """
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = b""
    closed: dict[socket.socket, tuple] = {}
    deadline = time.monotonic() + timeout
    while len(closed) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[sock] += data
                continue
            closed[sock] = (time.monotonic(), received[sock])
            selector.unregister(sock)
    selector.close()
    open_ones = len(sockets) - len(closed)
    assert not open_ones, f"{open_ones} of {len(sockets)} connections still open after {timeout}s"
    return closed


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from a blocking socket."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(next(v for k, v in headers_of(head) if k == b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def headers_of(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines)]


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def json_body(raw: bytes) -> dict:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def test_idle_and_half_sent_connections_are_closed_after_the_header_timeout(edge):
    service = start_gateway(edge, header_timeout_seconds=HEADER_TIMEOUT)
    first_opened = time.monotonic()
    sockets = []
    for i in range(SLOW_SOCKETS):
        sock = connect(edge)
        if i % 2:
            sock.sendall(PARTIAL_HEAD)  # a request head that never ends
        sockets.append(sock)
    last_opened = time.monotonic()
    try:
        # Meanwhile every endpoint answers, a prediction included.
        with edge.client() as client:
            health = client.get("/health")
            predicted = client.post("/predict", params={"wait": 10}, json=SEED_BODY)
            opened = value(edge.metrics(), "mlops_connections_open")
        assert health.status_code == 200
        assert predicted.status_code == 200 and predicted.json()["status"] == "SUCCESS"
        assert opened >= SLOW_SOCKETS

        closed = wait_closed(sockets, HEADER_TIMEOUT + 30)
    finally:
        for sock in sockets:
            sock.close()
    times = [at for at, _ in closed.values()]
    assert min(times) - first_opened >= HEADER_TIMEOUT - 0.25, "closed before the deadline"
    assert max(times) - last_opened <= HEADER_TIMEOUT + 10
    idle = [data for sock, (_, data) in closed.items() if sockets.index(sock) % 2 == 0]
    half_sent = [data for sock, (_, data) in closed.items() if sockets.index(sock) % 2]
    assert set(idle) == {b""}  # nothing asked, nothing answered
    assert {status_of(data) for data in half_sent} == {408}
    assert json_body(half_sent[0])["reason"] == "timeout"

    found = edge.metrics()
    assert value(found, "mlops_connections_timed_out_total", phase="request_head") >= SLOW_SOCKETS
    assert value(found, "mlops_connections_open") <= 2  # this scrape's own connection
    wait_until(lambda: "sent no complete request head" in service.output(), 5, "the log line")


def test_a_head_trickled_byte_by_byte_is_cut_at_the_deadline_also_on_a_kept_alive_connection(
    edge,
):
    """Sending a byte now and then does not keep a connection: the deadline is for the head."""
    start_gateway(edge, header_timeout_seconds=HEADER_TIMEOUT, keep_alive_seconds=2)
    fresh, kept = connect(edge), connect(edge)
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
    assert status_of(read_response(kept)) == 200
    started = time.monotonic()
    trickle = b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"x" * 1000
    sent, outcome = 0, {}
    try:
        while len(outcome) < 2 and time.monotonic() - started < HEADER_TIMEOUT + 20:
            for sock in (fresh, kept):
                if sock in outcome:
                    continue
                try:
                    sock.sendall(trickle[sent : sent + 1])
                except OSError:
                    outcome[sock] = (time.monotonic(), b"")
            sent += 1
            readable, _, _ = selectors.select.select([s for s in (fresh, kept)], [], [], 0.25)
            for sock in readable:
                if sock not in outcome:
                    outcome[sock] = (time.monotonic(), sock.recv(65536))
    finally:
        fresh.close()
        kept.close()
    assert len(outcome) == 2, "a trickled request head kept its connection open"
    for at, data in outcome.values():
        assert HEADER_TIMEOUT - 0.25 <= at - started <= HEADER_TIMEOUT + 10
        assert data == b"" or status_of(data) == 408


def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closes(edge):
    start_gateway(edge, body_timeout_seconds=BODY_TIMEOUT)
    sock = connect(edge)
    sock.sendall(SLOW_BODY_HEAD + BODY[:10])  # the head, then a tenth of the body
    started = time.monotonic()
    try:
        [(closed_at, answer)] = wait_closed([sock], BODY_TIMEOUT + 20).values()
    finally:
        sock.close()
    assert status_of(answer) == 408
    assert json_body(answer)["reason"] == "timeout"
    assert "gateway.body_timeout_seconds" in json_body(answer)["detail"]
    assert BODY_TIMEOUT - 0.25 <= closed_at - started <= BODY_TIMEOUT + 10
    assert value(edge.metrics(), "mlops_requests_rejected_total", reason="timeout") == 1


def test_requests_beyond_max_requests_get_503_while_health_still_answers(edge):
    service = start_gateway(edge, max_requests=4, body_timeout_seconds=BODY_TIMEOUT)
    slow = [connect(edge) for _ in range(4)]
    for sock in slow:  # four requests in progress, each waiting for the rest of its body
        sock.sendall(SLOW_BODY_HEAD + BODY[:10])
    try:
        time.sleep(0.5)
        with edge.client() as client:
            refused = client.get("/version")
            health = client.get("/health")
        assert refused.status_code == 503
        assert refused.json()["reason"] == "overloaded"
        assert "gateway.max_requests" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert health.status_code == 200
        wait_closed(slow, BODY_TIMEOUT + 20)  # they end in 408; then there is room again
    finally:
        for sock in slow:
            sock.close()
    with edge.client() as client:
        assert client.get("/version").status_code == 200
    assert value(edge.metrics(), "mlops_connections_refused_total", reason="max_requests") == 1
    assert "refused 1 request(s) with 503: 4 requests are in progress" in service.output()


def test_connections_beyond_max_connections_get_503_are_counted_and_logged(edge):
    service = start_gateway(edge, max_connections=50, header_timeout_seconds=60)
    idle = [connect(edge) for _ in range(50)]
    try:
        time.sleep(0.5)
        refused = httpx.get(f"{edge.url}/health", timeout=10)
        silent = connect(edge)  # refused before it sends anything: the answer comes at once
        [(_, answer)] = wait_closed([silent], 5).values()
        silent.close()
    finally:
        for sock in idle:
            sock.close()
    assert refused.status_code == 503
    assert refused.json()["reason"] == "overloaded"
    assert "gateway.max_connections" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert status_of(answer) == 503
    wait_until(lambda: httpx.get(f"{edge.url}/health").status_code == 200, 10, "room again")
    assert value(edge.metrics(), "mlops_connections_refused_total", reason="max_connections") == 2
    wait_until(
        lambda: "connection(s) with 503: 50 connections are open" in service.output(), 15, "log"
    )


def test_an_upgrade_request_is_served_as_plain_http_within_the_limits(edge):
    """No WebSocket protocol behind the gateway: its connections would escape every limit."""
    service = start_gateway(edge)
    sock = connect(edge)
    sock.sendall(
        b"GET /health HTTP/1.1\r\nHost: edge\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    try:
        answer = read_response(sock)
    finally:
        sock.close()
    assert status_of(answer) == 200 and json_body(answer) == {"status": "ok"}
    wait_until(lambda: value(edge.metrics(), "mlops_connections_open") == 1, 5, "the close")
    assert "asking for a protocol upgrade" in service.output()


def test_expect_100_continue_and_kept_alive_requests_are_answered_whole(edge):
    """Responses leave in one write (app/edge.py): a client that asks for 100 Continue still
    gets it before it sends the body, and a kept-alive connection gets each answer whole."""
    start_gateway(edge)
    sock = connect(edge)
    head = SLOW_BODY_HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    try:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any byte of the body
        sock.sendall(BODY)
        answers = [read_response(sock)]
        for _ in range(3):
            sock.sendall(SLOW_BODY_HEAD + BODY)
            answers.append(read_response(sock))
    finally:
        sock.close()
    assert [status_of(answer) for answer in answers] == [202] * 4
    assert len({json_body(answer)["job_id"] for answer in answers}) == 4


def test_production_hides_the_docs_and_tells_ready_reasons_only_to_api_keys(edge):
    start_gateway(edge, "production")
    hidden = {path: httpx.get(f"{edge.url}{path}") for path in ("/docs", "/redoc", "/openapi.json")}
    anonymous = httpx.get(f"{edge.url}/ready")
    wrong_key = httpx.get(f"{edge.url}/ready", headers={"X-API-Key": "wrong"})
    keyed = httpx.get(f"{edge.url}/ready", headers={"X-API-Key": PREDICT_KEY})
    assert {path: r.status_code for path, r in hidden.items()} == dict.fromkeys(hidden, 404)
    assert anonymous.status_code == keyed.status_code == 200, keyed.text
    assert anonymous.json() == wrong_key.json() == {"status": "ready"}
    assert keyed.json()["reasons"] == [] and keyed.json()["workers"]

    start_gateway(edge, "production", docs="true")
    assert httpx.get(f"{edge.url}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{edge.url}/openapi.json").json()["paths"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_the_gateway_serves_https_with_the_configured_certificate(edge, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    env = edge.env(MLOPS_GATEWAY__SSL_CERTFILE=str(cert), MLOPS_GATEWAY__SSL_KEYFILE=str(key))
    service = Process("gateway-tls", commands.gateway("127.0.0.1", port), env, edge.logs).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{port}/health"
        wait_until(lambda: httpx.get(url, verify=context).status_code == 200, 30, "https")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on that port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        service.stop()
