"""``otelgate replay DUMP.json -- [pytest args]``: re-run the suites' assertions against a saved dump, no stack.

A dump written by the artifacts plugin carries the run's journal (:mod:`otelgate.reports.journal`). The replay runs
pytest on the suites with the ``stack`` fixture replaced by a :class:`ReplayStack`: an in-process sink loaded with
the dump (``POST /api/load``), so the claims query the real sink API, while ``send()`` and the claims' clock answer
from the journal. The replayed sink shows only what had arrived by the recorded time of the claim's next event, as
the live sink did. By default only the test(s) the dump was saved for run; ``--all-recorded`` runs every test the
journal has. At the end the replayed results are compared with the recorded ones (outcome and cause).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import types
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from otelgate import paths, traffic
from otelgate.claims import Timing
from otelgate.reports.journal import JOURNAL_KEY, Player, ReplayMismatch
from otelgate.reports.pytest_plugin import cause_of, outcome_of
from otelgate.stacks.base import StackSettings

DEFAULT_SUITES = paths.CHECKOUT / "suites" if paths.CHECKOUT else None  # outside a checkout: --suites
LISTS = ("spans", "metric_points", "logs", "rejections")
# The replayed data only changes at journal events, never while a claim polls: a short wait decides the same.
REPLAY_TIMING = Timing(signal=2.0, settle=1.2, scrape=1.0)
DEFAULT_SLACK_SECONDS = 0.5


class DumpError(ValueError):
    """The file is not a usable otelgate dump."""


def load_dump(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DumpError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        dump = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DumpError(f"{path} is not JSON: {exc}") from None
    if not isinstance(dump, dict) or dump.get("otelgate_dump") != 1:
        raise DumpError(f"{path} is not an otelgate dump (no \"otelgate_dump\": 1 at the top)")
    bad = [key for key in LISTS if not isinstance(dump.get(key), list)]
    if bad:
        raise DumpError(f"{path}: {', '.join(bad)} must be list(s)")
    return dump


def visible_until(dump: Mapping[str, Any], horizon_ns: int | None) -> dict[str, Any]:
    """The dump as the sink held it at ``horizon_ns`` (items received later left out); everything when None."""
    if horizon_ns is None:
        return {**dump}
    limit = horizon_ns / 1e9

    def arrived(item: Mapping[str, Any], field: str) -> bool:
        when = item.get(field)
        return not isinstance(when, int | float) or when <= limit

    visible = {**dump}
    for key in ("spans", "metric_points", "logs"):
        visible[key] = [item for item in dump[key] if arrived(item, "received_at")]
    visible["rejections"] = [item for item in dump["rejections"] if arrived(item, "at")]
    return visible


class ReplayStack:
    """A :class:`~otelgate.stacks.base.Stack` over a saved dump: a real in-process sink, no gateway, no collector."""

    name = "replay"
    gateway_url = "http://replay.invalid"  # never contacted: send() answers from the journal

    def __init__(self, dump: Mapping[str, Any], slack_seconds: float = DEFAULT_SLACK_SECONDS) -> None:
        from otelgate.sink.config import DEFAULT_MAX_ITEMS
        from otelgate.sink.server import SinkServer

        meta = (dump.get(JOURNAL_KEY) or {}).get("stack") or {}
        self.kong_deployment_name = meta.get("kong_deployment_name") or "kong"
        self.recorded_stack = meta.get("name") or "?"
        self.settings = StackSettings()
        self._dump = {key: value for key, value in dump.items() if key != JOURNAL_KEY}
        self._slack_ns = int(slack_seconds * 1e9)
        largest = max(len(self._dump[key]) for key in LISTS)
        profile: Literal["dynatrace", "otlp"] = "otlp" if dump.get("profile") == "otlp" else "dynatrace"
        token = secrets.token_hex(16) if profile == "dynatrace" else None  # nothing ingests; the API needs none
        self._server = SinkServer(profile=profile, token=token, max_items=max(DEFAULT_MAX_ITEMS, largest + 1))
        self._shown: tuple[int, ...] | None = None

    @property
    def timing(self) -> Timing:
        return REPLAY_TIMING

    @timing.setter
    def timing(self, value: Any) -> None:
        """Callers (negative controls) set longer waits; on static data they cannot change a verdict."""

    @property
    def sink(self) -> Any:
        return self._server.client

    def start(self) -> ReplayStack:
        self._server.start()
        self.show_until(None)
        return self

    def show_until(self, horizon_ns: int | None) -> None:
        """Load what the sink held at ``horizon_ns`` (plus the clock slack); nothing is sent if it is unchanged."""
        visible = visible_until(self._dump, None if horizon_ns is None else horizon_ns + self._slack_ns)
        # sets cut at a time threshold are nested, so equal sizes mean equal content
        shown = tuple(len(visible[key]) for key in LISTS)
        if shown != self._shown:
            self.sink.load(visible)
            self._shown = shown

    def reconfigure(self, **changes: Any) -> None:
        unknown = set(changes) - set(StackSettings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown stack settings {sorted(unknown)}")
        self.settings = self.settings.with_changes(**changes)  # recorded data already reflects the change

    def diagnose(self, dest: Path) -> Path:
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "replay.txt").write_text(f"replay of a dump recorded on the {self.recorded_stack} stack; "
                                         "no processes to diagnose\n")
        return dest

    def close(self) -> None:
        self._server.stop()


@dataclass
class Result:
    outcome: str
    cause: str | None = None
    when: str = "call"


class ReplaySession:
    """The pytest plugin object of one replay: overrides ``stack``, selects the tests, records the results."""

    def __init__(self, dump: Mapping[str, Any], *, all_recorded: bool = False,
                 slack_seconds: float = DEFAULT_SLACK_SECONDS) -> None:
        self.journal: Mapping[str, Any] = dump.get(JOURNAL_KEY) or {}
        self.stack = ReplayStack(dump, slack_seconds)
        self.player = Player(self.journal, on_horizon=self.stack.show_until)
        self.all_recorded = all_recorded
        self.results: dict[str, Result] = {}
        stack = self.stack

        @pytest.fixture(scope="session", name="stack")
        def replayed_stack() -> ReplayStack:
            return stack

        self._override = types.ModuleType("otelgate_replay_stack", "the `stack` fixture of a replay")
        self._override.replayed_stack = replayed_stack  # type: ignore[attr-defined]

    def __enter__(self) -> ReplaySession:
        if traffic.journal is not None:
            raise RuntimeError("a journal is already installed (a replay inside a pytest run?)")
        self.stack.start()
        traffic.journal = self.player
        return self

    def __exit__(self, *exc: object) -> None:
        traffic.journal = None
        self.stack.close()

    # --- pytest hooks -----------------------------------------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        from otelgate.reports import pytest_plugin

        if not config.pluginmanager.is_registered(pytest_plugin):  # its hooks switch the journal's segments
            config.pluginmanager.register(pytest_plugin, "otelgate-reports")
        # registered after every other plugin, so this `stack` wins over otelgate.pytest_plugin's
        config.pluginmanager.register(self._override, "otelgate-replay-stack")

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        wanted = self.wanted_tests()
        keep = [item for item in items if item.nodeid in wanted]
        dropped = [item for item in items if item.nodeid not in wanted]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report: pytest.TestReport = yield
        if report.when in ("setup", "call") and not report.passed and item.nodeid not in self.results:
            self.results[item.nodeid] = Result(outcome_of(report), cause_of(call), report.when)
        elif report.when == "call" and report.passed:
            self.results.setdefault(item.nodeid, Result("passed"))
        return report

    # --- selection and comparison ----------------------------------------------------------------------------

    def recorded_tests(self) -> list[str]:
        return [key for key in self.journal.get("segments", {}) if not key.startswith("fixture:")]

    def wanted_tests(self) -> set[str]:
        return set(self.recorded_tests()) if self.all_recorded else set(self.journal.get("tests") or [])

    def comparison(self) -> tuple[bool, str]:
        """(replay reproduced every recorded outcome and cause, a table for people)."""
        recorded: Mapping[str, Any] = self.journal.get("outcomes") or {}
        lines = ["otelgate replay: recorded vs replayed"]
        same = True
        for test_id in sorted(set(recorded) | set(self.results)):
            before, after = recorded.get(test_id), self.results.get(test_id)
            was = _describe(before.get("outcome"), before.get("cause")) if before else "not recorded"
            now = _describe(after.outcome, after.cause) if after else "not run"
            match = before is not None and after is not None and (
                before.get("outcome"), before.get("cause")) == (after.outcome, after.cause)
            same = same and (match or before is None)
            lines.append(f"  {'same' if match else 'DIFFERS' if before else 'new'}: {test_id}: recorded {was}, "
                         f"replayed {now}")
        if not recorded:
            lines.append("  (the dump records no outcomes)")
        return same and bool(recorded), "\n".join(lines)


def _describe(outcome: Any, cause: Any) -> str:
    return f"{outcome} [{cause}]" if cause else str(outcome)


# --------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dump", type=Path, help="a sink-dump.json from an artifacts folder")
    parser.add_argument("--all-recorded", action="store_true",
                        help="run every test the journal recorded, not only the test(s) the dump was saved for")
    parser.add_argument("--compare", action="store_true",
                        help="exit 0 only if every test's outcome and cause equal the recorded ones")
    parser.add_argument("--clock-slack", type=float, default=DEFAULT_SLACK_SECONDS, metavar="SECONDS",
                        help="tolerance between the client's and the sink's clocks (default %(default)s)")
    parser.add_argument("--suites", type=Path, default=DEFAULT_SUITES,
                        help="where the suites are, when no test path is given after -- (default: this checkout's)")
    parser.epilog = "pytest options go after --, e.g.: otelgate replay dump.json -- -k logs -x"


def pytest_arguments(args: argparse.Namespace) -> list[str]:
    passthrough = list(getattr(args, "passthrough", []) or [])
    names_a_path = any(not a.startswith("-") and Path(a.split("::")[0]).exists() for a in passthrough)
    targets = [] if names_a_path or args.suites is None else [str(args.suites)]
    # the checkout's root (its conftest.py and pyproject.toml), or the suites' parent folder outside a checkout
    rootdir = paths.CHECKOUT or (Path(args.suites).resolve().parent if args.suites else Path.cwd())
    # otelgate is imported before pytest starts, so pytest cannot rewrite its asserts: expected, not news
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return [*targets, f"--rootdir={rootdir}", *quiet, *passthrough]


def run(args: argparse.Namespace) -> int:
    try:
        dump = load_dump(args.dump)
    except DumpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not dump.get(JOURNAL_KEY):
        print(f"error: {args.dump} has no journal of the run (\"{JOURNAL_KEY}\"); replay needs what the client "
              "sent and when. Dumps written into artifacts/<test id>/ by otelgate's pytest plugin have one; "
              "`otelgate report` can still render this dump.", file=sys.stderr)
        return 2
    pytest_args = pytest_arguments(args)
    if not any(Path(a.split("::")[0]).exists() for a in pytest_args if not a.startswith("-")):
        print(f"error: no suites at {args.suites}; pass --suites or a test path after --", file=sys.stderr)
        return 2
    try:
        session = ReplaySession(dump, all_recorded=args.all_recorded, slack_seconds=args.clock_slack)
    except ReplayMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with session:
        code = int(pytest.main(pytest_args, plugins=[session]))
    same, table = session.comparison()
    print(table)
    print("replay reproduces the recording" if same else "replay does NOT reproduce the recording")
    if args.compare:
        return 0 if same else 1
    return code
