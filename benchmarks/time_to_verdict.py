"""Wall time from `nox -s local` start to the verdict of the suites, with the collector already built.

Runs `nox -s local` twice in one go: the four suites alone (`-m "not negative"`), then the four suites plus the
negative-control matrix, and prints both times next to their goals (60 s and 180 s on a 2-core machine).
The nox virtualenv is reused, so the time is the harness's, not pip's (run `nox -s local` once before).

    python benchmarks/time_to_verdict.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = (
    ("four suites", ["-m", "not negative"], 60.0),
    ("four suites + negative-control matrix", [], 180.0),
)


def timed_nox(pytest_args: list[str]) -> tuple[float, int, str]:
    began = time.perf_counter()
    done = subprocess.run(["nox", "-s", "local", "--", "-q", *pytest_args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    seconds = time.perf_counter() - began
    summary = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
    return seconds, done.returncode, summary[-1] if summary else done.stdout[-500:]


def main() -> int:
    worst = 0
    for name, args, goal in RUNS:
        seconds, code, summary = timed_nox(args)
        verdict = "within" if seconds <= goal else "OVER"
        print(f"{name}: {seconds:.1f} s to verdict ({verdict} the {goal:.0f} s goal); exit {code}; {summary.strip()}")
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
