"""Long build commands (the collector, the control plane): bounded, streamed with progress, killed as a group.

One place for what both builds need: every output line echoed with the elapsed time, a heartbeat while the command
is quiet, a deadline that names what it waited for and the last lines it saw, the whole process group (the Go
toolchain's compilers) killed when the caller stops, and an exclusive lock so two builds never share a cache folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str], None]
HEARTBEAT_S = 30.0


class BuildCommandError(RuntimeError):
    """A followed command timed out or exited non-zero; the message names it and carries its last output lines."""


@dataclass(frozen=True)
class Followed:
    stdout: str          # the command's stdout when it was captured apart, else ""
    tail: list[str]      # the last lines followed (stderr, or stdout and stderr merged)
    returncode: int


def run_followed(argv: list[str], *, cwd: Path, env: dict[str, str], progress: Progress, label: str, what: str,
                 timeout: float, capture_stdout: bool = False, check: bool = True,
                 started: float | None = None, keep: int = 200) -> Followed:
    """Run ``argv`` in its own process group and follow its output line by line (stderr alone when
    ``capture_stdout``, whose stdout is then returned whole; else stdout and stderr merged)."""
    started = time.monotonic() if started is None else started
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if capture_stdout else subprocess.STDOUT)
    followed_stream = proc.stderr if capture_stdout else proc.stdout
    stdout_parts: list[str] = []
    try:
        if capture_stdout:
            drain = threading.Thread(target=lambda: stdout_parts.append(proc.stdout.read() if proc.stdout else ""),
                                     daemon=True)
            drain.start()
        tail = _follow(followed_stream, progress=progress, label=label, what=what, started=started,
                       deadline=time.monotonic() + timeout, timeout=timeout, keep=keep)
        returncode = proc.wait(timeout=60)
        if capture_stdout:
            drain.join(timeout=60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    if check and returncode != 0:
        raise BuildCommandError(f"{what} failed (exit {returncode}): {' '.join(argv)}\n" + "\n".join(tail[-40:]))
    return Followed("".join(stdout_parts), tail, returncode)


def _follow(stream: object, *, progress: Progress, label: str, what: str, started: float, deadline: float,
            timeout: float, keep: int) -> list[str]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BuildCommandError(f"timed out after {timeout:.0f}s waiting for {what}; last output:\n"
                                    + "\n".join(tail[-20:]))
        try:
            line = lines.get(timeout=min(HEARTBEAT_S, remaining))
        except queue.Empty:
            progress(f"[{label}] {time.monotonic() - started:6.1f}s still running: {what}")
            continue
        if line is None:
            return tail
        tail = [*tail[-(keep - 1):], line]
        progress(f"[{label}] {time.monotonic() - started:6.1f}s {line}")


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if missing) for the block."""
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
