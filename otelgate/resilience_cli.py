"""``otelgate outage``: the longest backend outage the configured pipeline survives without loss at a given request
rate. It brings the local stack up, then drives outages of growing length (429 with Retry-After, then 503, as claim 5
does), judges each with the claim, and stops at the first loss: it prints every step, the longest outage survived,
the first one lost with its cause, and the setting that limits it (``--out FILE`` writes the same as Markdown)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from otelgate import resilience
from otelgate.expect.errors import ExpectationFailed
from otelgate.stacks.base import Stack

DEFAULT_STEPS = (20.0, 60.0, 120.0, 160.0, 200.0, 240.0)
# losses the outage did not cause: the step counts as survived by the exporter, and the stepping goes on
NOT_THE_OUTAGE = frozenset({"NEW_HISTOGRAM_BUCKET"})


@dataclass(frozen=True)
class Step:
    seconds: float
    cause: str | None                        # None: everything arrived exactly once within the bound
    delivered_after: float | None
    peak_queue_by_signal: dict[str, float]
    message: str = ""


@dataclass
class Survival:
    rate: float
    policy: resilience.ExporterPolicy
    steps: list[Step] = field(default_factory=list)

    @property
    def longest_survived(self) -> float | None:
        """The longest outage after which the exporter had lost nothing (a window lost to a new histogram bucket
        is not the outage's doing; the steps show it)."""
        return max((s.seconds for s in self.steps if s.cause is None or s.cause in NOT_THE_OUTAGE), default=None)

    @property
    def first_lost(self) -> Step | None:
        return next((s for s in self.steps if s.cause is not None and s.cause not in NOT_THE_OUTAGE), None)

    def queue_projection(self) -> tuple[float, str] | None:
        """From the longest survived step: how long until the fastest-filling signal's queue is full (queue_size /
        its fill rate), and which signal that is. A projection, not a measurement."""
        survived = [s for s in self.steps if (s.cause is None or s.cause in NOT_THE_OUTAGE)
                    and s.peak_queue_by_signal]
        if not survived or not self.policy.queue_enabled:
            return None
        step = max(survived, key=lambda s: s.seconds)
        signal, peak = max(step.peak_queue_by_signal.items(), key=lambda item: item[1])
        if peak <= 0:
            return None
        return self.policy.queue_size / (peak / step.seconds), signal

    def limiting_setting(self) -> str:
        lost = self.first_lost
        if lost is not None and lost.cause == "QUEUE_FULL":
            return f"sending_queue.queue_size = {self.policy.queue_size} requests (per signal)"
        if lost is not None and lost.cause == "DROPPED_ON_SEND_FAILURE":
            return ("retry_on_failure disabled" if not self.policy.retry_enabled else
                    f"retry_on_failure.max_elapsed_time = {self.policy.max_elapsed_time:g}s")
        projection = self.queue_projection()
        if projection is not None and projection[0] < self.policy.max_elapsed_time:
            return (f"sending_queue.queue_size = {self.policy.queue_size} (projected full after {projection[0]:.0f}s "
                    f"of outage, {projection[1]} queue)")
        return f"retry_on_failure.max_elapsed_time = {self.policy.max_elapsed_time:g}s (projected)"

    def render(self) -> str:
        lines = [f"Outage survival at {self.rate:g} requests/s; exporter: {self.policy.describe()}", "",
                 "| outage | verdict | everything arrived after recovery | peak queue (requests) per signal |",
                 "|---|---|---|---|"]
        for s in self.steps:
            verdict = ("no loss, no duplicates" if s.cause is None else
                       f"`{s.cause}` (not the outage: the exporter dropped nothing)" if s.cause in NOT_THE_OUTAGE
                       else f"`{s.cause}`")
            after = "-" if s.delivered_after is None else f"{s.delivered_after:.1f}s"
            queues = ", ".join(f"{k} {v:g}" for k, v in sorted(s.peak_queue_by_signal.items())) or "-"
            lines.append(f"| {s.seconds:g}s | {verdict} | {after} | {queues} |")
        longest, lost = self.longest_survived, self.first_lost
        lines += ["", f"longest outage survived: {'none' if longest is None else f'{longest:g}s'}"
                  + ("" if lost is None else f"; first lost: {lost.seconds:g}s ({lost.cause})"),
                  f"limiting setting: {self.limiting_setting()}"]
        return "\n".join(lines)


def survivable_outage(stack: Stack, rate: float, steps: Sequence[float], retry_after: int = 2) -> Survival:
    """Drive each outage length in ``steps`` (ascending) until one loses data; every step judged by claim 5."""
    if not steps or list(steps) != sorted(steps) or any(not s > 0 or math.isinf(s) for s in steps):
        raise ValueError(f"steps must be ascending positive seconds, got {list(steps)}")
    survival = Survival(rate, resilience.stack_policy(stack))
    for seconds in steps:
        run = resilience.run_outage(stack, resilience.Outage(seconds, retry_after=retry_after), rate=rate)
        try:
            resilience.judge(run)
        except ExpectationFailed as exc:
            survival.steps.append(Step(seconds, exc.cause, None, run.peak_queue_by_signal, exc.message))
            print(f"outage {seconds:g}s: {exc}", flush=True)
            if exc.cause in NOT_THE_OUTAGE:
                continue
            break
        survival.steps.append(Step(seconds, None, run.delivered_after, run.peak_queue_by_signal))
        print(f"outage {seconds:g}s: no loss ({run.delivered_after or 0:.1f}s after recovery)", flush=True)
    return survival


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second through Kong (default 5)")
    parser.add_argument("--steps", default=",".join(f"{s:g}" for s in DEFAULT_STEPS),
                        help="outage lengths in seconds, ascending, comma-separated (default %(default)s)")
    parser.add_argument("--retry-after", type=int, default=2, help="Retry-After seconds on the 429s (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as Markdown to FILE")
    parser.add_argument("--workdir", type=Path, default=None, help="the local stack's logs and configs")


def run(args: argparse.Namespace) -> int:
    from otelgate import claims
    from otelgate.stacks.base import StackOptions, StackStartError
    from otelgate.stacks.registry import stack_module

    try:
        steps = [float(part) for part in str(args.steps).split(",") if part.strip()]
    except ValueError:
        print(f"otelgate outage: --steps {args.steps!r}: expected comma-separated seconds", file=sys.stderr)
        return 2
    try:
        stack = stack_module("local").start(StackOptions(workdir=args.workdir))
    except StackStartError as exc:
        print(f"otelgate outage: the local stack did not start: {exc}", file=sys.stderr)
        return 1
    try:
        claims.prime(stack)
        survival = survivable_outage(stack, args.rate, steps, args.retry_after)
    except ValueError as exc:
        print(f"otelgate outage: {exc}", file=sys.stderr)
        return 2
    finally:
        stack.close()
    text = survival.render()
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0
