"""Child processes that never outlive otelgate: started in their own process group, output captured to a file,
readiness polled with a bound, stopped with SIGTERM then SIGKILL. Also free-port allocation on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from otelgate.waiting import poll_until

# strong references: a process whose owner dropped it (e.g. wait_ready raised) is still stopped at exit
_LIVE: set[ManagedProcess] = set()


_HANDED_OUT: set[int] = set()
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _listen_port_range() -> range:
    """Ports below the kernel's ephemeral range: an outgoing connection of any process can take an ephemeral port
    between our check and a child's bind (seen in CI as "address already in use"); these it never takes."""
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return range(max(1024, ephemeral_low - 12000), ephemeral_low)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``, outside the ephemeral range, never handed out twice by this process."""
    candidates = _listen_port_range()
    generator = random.SystemRandom()
    for _ in range(200):
        port = generator.choice(candidates)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port on {host} in {candidates.start}-{candidates.stop - 1} after 200 tries")


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class ProcessDied(RuntimeError):
    pass


class ManagedProcess:
    """One child process with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # own process group: stop() reaches grandchildren too
        )
        log.close()
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ProcessDied(
                f"{self.name} exited with code {self.popen.returncode}; log {self.log_path}:\n{self.log_tail()}"
            )

    def wait_ready(self, probe: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``probe`` until it is true; fail at once if the process dies meanwhile."""

        def observe() -> bool:
            self.check_alive()
            return probe()

        try:
            poll_until(observe, bool, what=f"{self.name}: {what}", timeout=timeout, interval=0.1,
                       retry_on=(OSError, ConnectionError, TimeoutError, ValueError))
        except ProcessDied:
            raise
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log tail ({self.log_path}) ---\n{self.log_tail()}") from exc

    def stop(self, grace: float = 5.0) -> None:
        _LIVE.discard(self)
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)
        # the group may still hold stragglers (e.g. a reloader child)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python_argv(module: str, *args: str) -> list[str]:
    """Run a module with the current interpreter (the one otelgate is installed in)."""
    return [sys.executable, "-m", module, *args]


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(grace=2.0)


def wait_port_free(host: str, port: int, timeout: float = 5.0) -> None:
    poll_until(lambda: port_is_open(host, port), lambda is_open: not is_open,
               what=f"port {host}:{port} to be released", timeout=timeout)


