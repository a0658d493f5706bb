"""Refusals cost no more than acceptances on a keep-alive connection (issue: every 4xx took 44 ms, a 200 ~1 ms).

The cause was Nagle's algorithm on the sink's connections: the listening socket was made with protocol 0, so
asyncio did not set TCP_NODELAY on accepted sockets (it checks ``sock.proto == IPPROTO_TCP``); a response with a
body (every refusal) went out as two writes and the second waited for the client's delayed ACK (40 ms on Linux).
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from otelgate.sink.server import SinkServer, bound_socket
from otelgate.sink.testing import fake_token, span, traces_request

TOKEN = fake_token()
ROUNDS = 15
# a Nagle/delayed-ACK stall adds >= 40 ms to a request; scheduling noise on a busy 2-core machine stays far below
STALL_MS = 25.0


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkServer]:
    with SinkServer(profile="dynatrace", token=TOKEN) as server:
        yield server


def _median_ms(send: Callable[[], httpx.Response], expected_status: int) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        response = send()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == expected_status, response.content[:200]
    return statistics.median(times)


def test_the_listening_socket_disables_nagle() -> None:
    sock = bound_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # what asyncio checks before setting TCP_NODELAY per connection
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


@pytest.mark.parametrize(("case", "status"), [
    ("malformed protobuf", 400),
    ("wrong content type", 415),
    ("unsupported encoding", 415),
    ("no token", 401),
])
def test_a_refusal_on_a_keep_alive_connection_is_as_fast_as_an_acceptance(sink: SinkServer, case: str,
                                                                         status: int) -> None:
    url = sink.signal_url("traces")
    good = traces_request([span("fast")]).SerializeToString()
    auth = {"Authorization": f"Api-Token {TOKEN}"}
    protobuf = {"Content-Type": "application/x-protobuf"}
    bad = {
        "malformed protobuf": (b"\xff\xff\xff", {**protobuf, **auth}),
        "wrong content type": (good, {"Content-Type": "text/plain", **auth}),
        "unsupported encoding": (good, {**protobuf, "Content-Encoding": "br", **auth}),
        "no token": (good, protobuf),
    }[case]
    with httpx.Client(timeout=10) as client:  # one connection, kept alive across all requests
        client.post(url, content=good, headers={**protobuf, **auth})  # connect outside the measurement
        accepted = _median_ms(lambda: client.post(url, content=good, headers={**protobuf, **auth}), 200)
        refused = _median_ms(lambda: client.post(url, content=bad[0], headers=bad[1]), status)
    assert refused - accepted < STALL_MS, (
        f"{case}: median {refused:.1f} ms for the {status} vs {accepted:.1f} ms for a 200 on the same keep-alive "
        f"connection (a Nagle/delayed-ACK stall adds >= 40 ms)")
