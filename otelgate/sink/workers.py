"""Decode workers: more than one core for trace ingest, one store.

The sink stays one process that owns the store, so every query sees one consistent state. What costs CPU at ingest
is decoding the protobuf body and walking its spans (``spanstore.prepare_spans``, a pure function of the bytes);
with ``workers > 0`` large trace bodies go to a pool of worker processes for that step, while the event loop keeps
serving HTTP and the main process only applies the result to the store (an index update per trace). The answer
and the store are identical either way (tested). Small bodies stay inline: shipping them costs more than decoding.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from otelgate.sink.spanstore import PreparedSpans, prepare_spans

log = logging.getLogger("otelgate.sink")

# below this many (decompressed) body bytes a request is decoded inline: measured on 2 cores, handing a 512-span
# request (~80 KB) to a worker cost more than decoding it (fewer spans/s), an 8192-span one (~1.2 MB) gained
INLINE_BELOW = 256 * 1024
MAX_AUTO_WORKERS = 4


def auto_workers() -> int:
    """Decode workers worth starting: one per core beyond the event loop's, and none on 1-2 cores.

    Measured on 2 shared cores (benchmarks/results/sink_ingest.md): one worker only moves the decode elsewhere and
    adds the pickling (8192-span requests at half the inline rate); two competed with the event loop (one run +17 %,
    the next -36 %). With 3+ cores the workers decode in parallel while the loop keeps a core.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(cores - 1, MAX_AUTO_WORKERS)


class SpanPreparer:
    """Runs :func:`prepare_spans` inline or in ``workers`` processes (started on first use, stopped by close)."""

    def __init__(self, workers: int, inline_below: int = INLINE_BELOW) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.inline_below = inline_below
        self._pool: ProcessPoolExecutor | None = None
        self.offloaded = 0  # requests prepared by a worker (for /healthz and tests)

    async def prepare(self, body: bytes, window: tuple[int, int] | None) -> PreparedSpans:
        earliest, latest = window if window is not None else (None, None)
        if not self.workers or len(body) < self.inline_below:
            return prepare_spans(body, earliest, latest)
        pool = self._ensure_pool()
        try:
            prepared = await asyncio.get_running_loop().run_in_executor(pool, prepare_spans, body, earliest, latest)
        except BrokenProcessPool:
            log.warning("a decode worker died; decoding inline from now on")
            self.workers = 0
            return prepare_spans(body, earliest, latest)
        self.offloaded += 1
        return prepared

    def start(self) -> None:
        """Start every worker now; each imports the decoder in the background while the sink already serves, so
        the first large request does not wait for process start-up (seconds on a busy machine: long enough for an
        exporter to time out and retry)."""
        if self.workers:
            pool = self._ensure_pool()
            for _ in range(self.workers):
                pool.submit(prepare_spans, b"", None, None)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the sink may run in a thread of a process with other threads (tests, SinkServer)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def worker_pids(self) -> list[int]:
        processes = getattr(self._pool, "_processes", None) or {}  # the executor keeps no public list
        return [int(pid) for pid in processes]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
