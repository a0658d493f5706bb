"""Sampling statistics: the traced fraction with a 95% Wilson interval, and Kong's deterministic ratio sampler.

Kong 3.8+/3.9 samples a trace iff the first 8 bytes of its trace id, read as a little-endian uint64 on x86-64 and
arm64, are below ``rate * 2**64`` (shared/reference/kong-3.9-telemetry.md §7.2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from otelgate.expect.errors import ExpectationFailed, NotEnoughData

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Fraction:
    traced: int
    sent: int
    low: float
    high: float

    @property
    def observed(self) -> float:
        return self.traced / self.sent if self.sent else float("nan")

    def contains(self, rate: float) -> bool:
        return self.low <= rate <= self.high

    def __str__(self) -> str:
        return f"{self.traced}/{self.sent} = {self.observed:.4f} (95% CI [{self.low:.4f}, {self.high:.4f}])"


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and 1, unlike the normal interval)."""
    if trials <= 0:
        raise ValueError("trials must be positive")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside [0, {trials}]")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)    # exact bounds at the edges (no rounding residue)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def traced_fraction(traced: int, sent: int) -> Fraction:
    low, high = wilson_interval(traced, sent)
    return Fraction(traced, sent, low, high)


def assert_rate(traced: int, sent: int, rate: float, min_sent: int = 20) -> Fraction:
    """Exact at rate 0 and 1; otherwise ``rate`` must lie inside the 95% interval of the observed fraction."""
    if sent < min_sent:
        raise NotEnoughData("requests for a sampling estimate", min_sent, sent)
    fraction = traced_fraction(traced, sent)
    if rate >= 1 and traced != sent:
        raise ExpectationFailed("SAMPLING_RATE", f"rate 1: every request must be traced; {fraction}")
    if rate <= 0 and traced != 0:
        raise ExpectationFailed("SAMPLING_RATE", f"rate 0: no request may be traced; {fraction}")
    if 0 < rate < 1 and not fraction.contains(rate):
        raise ExpectationFailed("SAMPLING_RATE", f"configured rate {rate} outside the observed {fraction}")
    return fraction


def kong_samples(trace_id_hex: str, rate: float) -> bool:
    """Kong's decision for ``trace_id_hex`` at ``rate`` (deterministic per trace id)."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    head = int.from_bytes(bytes.fromhex(trace_id_hex)[:8], "little")
    return head < rate * 2**64


def trace_id_with_fraction(fraction: float, tail: str = "0123456789abcdef") -> str:
    """A trace id whose Kong sampling fraction is ``fraction`` (for crafted, deterministic probes)."""
    head = min(int(fraction * 2**64), 2**64 - 1)
    return head.to_bytes(8, "little").hex() + tail



def stratified_trace_ids(count: int, seed: int) -> list[str]:
    """``count`` trace ids whose Kong sampling fractions are spread evenly over [0, 1), in a seeded random order.

    A release gate must not fail by chance, as a 95% interval over random ids does one run in twenty. With these
    ids Kong keeps ``rate * count`` (±1) of them at any rate, so the traced fraction must land inside the interval
    every time, and a sampler that ignores the rate, inverts it or reads the wrong bytes still fails.
    """
    generator = random.Random(seed)
    fractions = [(index + 0.5) / count for index in range(count)]
    generator.shuffle(fractions)
    return [trace_id_with_fraction(f, tail=f"{generator.getrandbits(64):016x}") for f in fractions]
