"""The shared process, port and wait helpers every stack relies on."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from otelgate.procs import ManagedProcess, ProcessDied, _listen_port_range, free_port, port_is_open
from otelgate.waiting import WaitTimeout, poll_until, wait_stable


def test_free_ports_are_bindable_unique_and_outside_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == 100
    assert all(port in _listen_port_range() for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))


def test_a_timeout_names_what_it_waited_for_and_the_last_value() -> None:
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        poll_until(lambda: 41, lambda value: value == 42, what="the answer", timeout=0.3, interval=0.05)
    assert time.monotonic() - began < 2
    assert "the answer" in str(err.value) and "41" in str(err.value)


def test_a_timeout_reports_the_last_error() -> None:
    def broken() -> int:
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match="refused"):
        poll_until(broken, bool, what="a service", timeout=0.2, interval=0.05)


def test_wait_stable_returns_once_the_value_stops_changing() -> None:
    values = iter([1, 2, 3, 3, 3, 3, 3, 3, 3, 3])
    assert wait_stable(lambda: next(values), what="a count", timeout=5, quiet=0.1, interval=0.05) == 3


def test_a_process_that_dies_fails_its_readiness_wait_at_once_with_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess("doomed", [sys.executable, "-c", "print('cannot start'); raise SystemExit(3)"],
                          tmp_path / "doomed.log").start()
    try:
        with pytest.raises(ProcessDied, match="cannot start"):
            proc.wait_ready(lambda: False, "never ready", timeout=10)
    finally:
        proc.stop()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    port = free_port()
    child = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(60)"
    parent = f"import subprocess,sys,time; subprocess.Popen([sys.executable,'-c',{child!r}]); time.sleep(60)"
    proc = ManagedProcess("parent", [sys.executable, "-c", parent], tmp_path / "parent.log").start()
    proc.wait_ready(lambda: port_is_open("127.0.0.1", port), "the grandchild to listen", timeout=10)
    proc.stop(grace=2)
    poll_until(lambda: port_is_open("127.0.0.1", port), lambda is_open: not is_open,
               what="the grandchild's port to close", timeout=5)
