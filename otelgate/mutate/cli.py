"""``otelgate mutate``: how many misconfigurations of the manifests does the gate catch?

Generates every single mutation of the collector resource, kong.yaml and the Instrumentation
(:mod:`otelgate.mutate.catalog`), judges each with ``otelgate lint`` and the claims on the local stack
(:mod:`otelgate.mutate.runner`) and writes ``reports/mutation-<ts>/`` (:mod:`otelgate.mutate.report`). Exit 1 when a
non-equivalent mutant survives, 0 when every one is killed or equivalent.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from otelgate import paths
from otelgate.mutate import catalog, report
from otelgate.mutate import runner as judging
from otelgate.mutate.runner import EQUIVALENTS_FILE, SURVIVED, Runner, Verdict, load_equivalents


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="+", metavar="OPERATOR", default=[],
                        help="only these mutation operators (see --list)")
    parser.add_argument("--sample", type=int, metavar="N", default=None,
                        help="judge N mutants spread over the operators (deterministic)")
    parser.add_argument("--jobs", type=int, metavar="N", default=1,
                        help="N local stacks judge mutants in parallel (default 1; the machine's cores bound it)")
    parser.add_argument("--list", action="store_true", help="print the catalog (id and description) and exit")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/mutation-<ts>)")
    parser.add_argument("--equivalents", type=Path, default=None,
                        help=f"the reviewed equivalents file (default <manifests>/{EQUIVALENTS_FILE})")


def run(args: argparse.Namespace) -> int:
    manifests = Path(getattr(args, "manifests", None) or paths.manifests_dir())
    try:
        mutants = catalog.generate(manifests, args.only)
    except (ValueError, catalog.CatalogError) as exc:
        print(f"otelgate mutate: {exc}", file=sys.stderr)
        return 2
    catalog_size = len(mutants)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.id}\t{mutant.description}")
        print(f"{catalog_size} mutants")
        return 0
    if args.sample is not None:
        mutants = catalog.sample(mutants, args.sample)
    if args.jobs < 1:
        print("otelgate mutate: --jobs must be at least 1", file=sys.stderr)
        return 2
    equivalents = load_equivalents(args.equivalents or manifests / EQUIVALENTS_FILE)
    if stale := sorted(set(equivalents) - {m.id for m in catalog.generate(manifests)}):
        print(f"otelgate mutate: the equivalents file names mutants the catalog no longer has: {stale}", flush=True)
    dest = (args.out or report.default_dest()).resolve()  # the stack's processes run in other folders
    originals = {name: target.documents for name, target in catalog.targets(manifests).items()}
    print(f"otelgate mutate: {len(mutants)} of {catalog_size} mutants, {args.jobs} job(s); report in {dest}",
          flush=True)
    started = time.monotonic()
    verdicts = _judge_all(mutants, originals, manifests, dest, equivalents, args.jobs, started)
    seconds = time.monotonic() - started
    summary = report.summarize(verdicts, catalog_size, seconds)
    meta = {"manifests": str(manifests), "machine": report.machine(), "jobs": args.jobs,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "operators": ", ".join(args.only) or "all",
            "sample": args.sample if args.sample is not None else "full catalog"}
    report.write(dest, verdicts, summary, meta)
    print(f"otelgate mutate: score {summary.score:.0%} ({summary.killed} killed, {summary.survived} survived, "
          f"{summary.equivalent} equivalent); mean verdict time {summary.mean_seconds:.1f} s; {dest}/report.md",
          flush=True)
    for verdict in verdicts:
        if verdict.verdict == SURVIVED:
            print(f"  SURVIVED {verdict.mutant}: {verdict.description} — {verdict.why}")
    return 1 if summary.survived else 0


def _judge_all(mutants: list[catalog.Mutant], originals: dict[str, tuple[object, ...]], manifests: Path, dest: Path,
               equivalents: dict[str, str], jobs: int, started: float) -> list[Verdict]:
    from otelgate.stacks.base import StackOptions
    from otelgate.stacks.registry import stack_module

    lock = threading.Lock()
    done: list[int] = [0]

    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / "verdicts.jsonl"  # every verdict as it is given: a cut-short run keeps what it judged

    def progress(_done: int, _total: int, verdict: Verdict, _elapsed: float) -> None:
        with lock:
            done[0] += 1
            with partial.open("a") as out:
                out.write(json.dumps(verdict.as_dict()) + "\n")
            elapsed = time.monotonic() - started
            eta = elapsed / done[0] * (len(mutants) - done[0])
            killer = f" by {verdict.killer} [{verdict.cause}]" if verdict.killer else ""
            phases = ", ".join(f"{k} {v:.1f}" for k, v in verdict.phases.items())
            print(f"[{done[0]}/{len(mutants)}] {verdict.verdict}{killer} {verdict.mutant} ({verdict.seconds:.1f} s"
                  f"{': ' + phases if phases else ''}; elapsed {elapsed:.0f} s, ETA {eta:.0f} s)", flush=True)

    shares = [mutants[i::jobs] for i in range(jobs)]
    results: list[list[Verdict]] = [[] for _ in shares]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        workdir = dest / "work" / f"job-{index}"
        runner = Runner(manifests, workdir, equivalents=equivalents, stack_factory=lambda: stack_module("local").start(
            StackOptions(workdir=workdir / "stack", manifests=manifests)))
        try:
            results[index] = judging.run(runner, shares[index], originals, progress)
        except Exception as exc:  # reported after the other jobs finished
            errors.append(exc)
        finally:
            runner.close()

    if jobs == 1:  # in this thread, so Ctrl-C / SIGTERM stop the stack through the runner's close()
        signal.signal(signal.SIGTERM, _interrupt)
        work(0)
        if errors:
            raise errors[0]
        return results[0]
    threads = [threading.Thread(target=work, args=(i,), name=f"mutate-{i}") for i in range(len(shares))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    by_id = {v.mutant: v for share in results for v in share}
    return [by_id[m.id] for m in mutants]


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
