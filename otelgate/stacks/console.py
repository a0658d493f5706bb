"""What ``otelgate up`` prints while a stack runs for a person, the same for every stack: the URLs, a status line
every few seconds until Ctrl-C or ``kill``."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otelgate.sink.client import SinkClient

SIGNALS = ("traces", "metrics", "logs")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C and ``kill`` both end in ``KeyboardInterrupt``, so the caller's ``finally`` tears down. SIGINT is
    re-armed because a shell starts background jobs with it ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)


def print_urls(urls: Mapping[str, str]) -> None:
    width = max((len(name) for name in urls), default=0)
    for name, url in urls.items():
        print(f"  {name:<{width}}  {url}")


def sink_status(sink: SinkClient, collector: str) -> str:
    """One line: what the sink has seen per signal (and rejected), and the collector's state."""
    try:
        stats = sink.stats()
    except Exception as exc:  # a status line must not end the session: the sink may be restarting
        return f"{time.strftime('%H:%M:%S')} sink unreachable: {exc!r}"
    parts = []
    for name in SIGNALS:
        counts = stats.get(name, {})
        parts.append(f"{name} {counts.get('requests', 0)} req/{counts.get('items', 0)} items"
                     + (f" ({counts['rejected_items']} rejected)" if counts.get("rejected_items") else ""))
    return f"{time.strftime('%H:%M:%S')} sink: " + ", ".join(parts) + f"; collector {collector}"


def print_status_until_interrupted(status: Callable[[], str], interval: float) -> None:
    """Print ``status()`` every ``interval`` seconds; returns on Ctrl-C or SIGTERM (see :func:`stop_on_signals`)."""
    try:
        while True:
            print(status(), flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
