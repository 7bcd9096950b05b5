"""A local S3-compatible server (moto's, conditional writes included), serving one request at
a time: in a thread of the test session (tests/conftest.py ``s3_server``), or as a process of
its own on another "host" (``python -m tests.s3_server ADDRESS PORT``,
tests/integration/test_separate_hosts.py).

moto checks a PUT's If-None-Match / If-Match and then writes, without a lock: two threads of
its server could both pass the check, which S3 and MinIO never allow. So requests are served
one at a time, as atomic as the real thing (ThreadedMotoServer's server otherwise).
"""

from __future__ import annotations

import logging
import sys
import threading

from werkzeug.serving import BaseWSGIServer


def make_s3_server(address: str, port: int) -> BaseWSGIServer:
    """The server bound to ``address:port``, not yet serving (``serve_forever``)."""
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    app, lock = DomainDispatcherApplication(create_backend_app), threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    return make_server(
        address, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler
    )


if __name__ == "__main__":
    make_s3_server(sys.argv[1], int(sys.argv[2])).serve_forever()
