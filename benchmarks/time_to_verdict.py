"""Wall time from `nox -s local` start to the verdict, with the collector already built, over several runs.

Two measurements, each its own `nox -s local` (stack bring-up included): the four suites (traces, metrics, logs,
sampling) and the negative-control matrix (suites/test_negative_controls.py). Each is run ``--runs`` times; min,
median and max are printed next to the goals (30 s and 45 s on a 2-core machine) and written, with the machine's
load average when each run started, to ``--out`` (default docs/time-to-verdict.md, which the README quotes). The
nox virtualenv is reused (`-R`), so the time is the harness's, not pip's (run `nox -s local` once before). With
``--python PY`` the suites run as `PY -m pytest suites --stack=local` instead (an environment with otelgate
installed, no nox).

    python benchmarks/time_to_verdict.py --runs 3 [--python .nox/tests/bin/python]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the four claims' suites, and their negative-control matrix (suites/test_negative_controls.py); other suites
# (e.g. resilience) are not part of these figures
MEASUREMENTS = (
    ("four suites", ["-m", "(traces or metrics or logs or sampling) and not negative"], 30.0),
    ("negative-control matrix", ["-m", "negative and not resilience"], 45.0),
)
RUN_TIMEOUT_S = 1800


@dataclass
class Measurement:
    name: str
    goal: float
    seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)   # 1-minute load average when each run started
    outcomes: list[str] = field(default_factory=list)

    def line(self) -> str:
        s = sorted(self.seconds)
        verdict = "within" if statistics.median(s) <= self.goal else "OVER"
        return (f"{self.name}: min {s[0]:.1f} s, median {statistics.median(s):.1f} s, max {s[-1]:.1f} s over "
                f"{len(s)} runs ({verdict} the {self.goal:.0f} s goal); load average at start "
                f"{min(self.loads):.1f}-{max(self.loads):.1f}")


def command(python: str | None, pytest_args: list[str]) -> list[str]:
    fixed = ["-q", "-p", "no:randomly", *pytest_args]
    if python is None:
        return ["nox", "-R", "-s", "local", "--", *fixed]
    return [python, "-m", "pytest", "suites", "--stack=local", *fixed]


def timed_run(argv: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - began
    summary = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
    outcome = summary[-1].strip("= ") if summary else f"exit {done.returncode}: {done.stdout[-300:]}"
    return seconds, f"exit {done.returncode}; {outcome}"


def report(measurements: list[Measurement], runs: int, how: str) -> str:
    cores = os.cpu_count()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = ["# Time to verdict (benchmarks/time_to_verdict.py)", "",
             f"Measured {when} on {cores} cores with `{how}`, collector already built, {runs} run(s) each, in turn. "
             "The machine is shared: the load average when each run started is given, as it moves the figures.", "",
             "| what | min | median | max | goal | load average at start | outcomes |", "|---|---|---|---|---|---|---|"]
    for m in measurements:
        s = sorted(m.seconds)
        lines.append(f"| {m.name} | {s[0]:.1f} s | {statistics.median(s):.1f} s | {s[-1]:.1f} s | {m.goal:.0f} s | "
                     f"{', '.join(f'{x:.1f}' for x in m.loads)} | {'; '.join(sorted(set(m.outcomes)))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--python", default=None,
                        help="run the suites with this interpreter's pytest instead of `nox -R -s local`")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "time-to-verdict.md",
                        help="where the figures are written (default docs/time-to-verdict.md)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    measurements = [Measurement(name, goal) for name, _, goal in MEASUREMENTS]
    failed = False
    for _ in range(args.runs):
        for measurement, (_, pytest_args, _) in zip(measurements, MEASUREMENTS, strict=True):
            measurement.loads.append(os.getloadavg()[0])
            seconds, outcome = timed_run(command(args.python, pytest_args))
            measurement.seconds.append(seconds)
            measurement.outcomes.append(outcome)
            failed = failed or not outcome.startswith("exit 0")
            print(f"{measurement.name}: {seconds:.1f} s; {outcome}", flush=True)
    for measurement in measurements:
        print(measurement.line())
    args.out.write_text(report(measurements, args.runs, " ".join(command(args.python, ['-m', '...']))))
    print(f"written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
