"""CI's mutation sample: a fixed, representative set of mutants across the collector resource, kong.yaml and the
Instrumentation, each applied to the running local stack (``--stack local``) and judged by lint and the claims as
``otelgate mutate`` does. Fails if one survives: a gate that lets one of these through has lost a check.

The full catalog runs with ``otelgate mutate`` / ``nox -s mutate`` (docs/mutation.md)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from otelgate import paths
from otelgate.mutate import catalog
from otelgate.mutate.runner import KILLED, Runner, lint_verdict, prepare_workspace
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.mutation, pytest.mark.stack, pytest.mark.timeout(600)]

# one mutant per kind of mistake, decided fast, every verdict path once: collector mutants killed on the stack by
# the traces (auth), metrics (conversion) and logs (trace parser) claims after a collector restart, and one lint kill
# (the Dynatrace exporter off the traces pipeline); Kong mutants killed by traces (sampling, propagation) and logs (the
# trace_id snippet) after a reload; Instrumentation mutants killed on the restarted services (a sampler ignoring
# Kong's not-sampled parent) and by lint (b3 propagators, the grpc protocol towards the OTLP/HTTP port)
SAMPLE = (
    "auth-header:otel/collector.yaml:exporters.otlp_http/dynatrace.headers.Authorization.scheme",
    "remove-processor:otel/collector.yaml:service.pipelines.metrics.processors.cumulative_to_delta",
    "tcplog-drop-operator:otel/collector.yaml:receivers.tcp_log.operators[1:trace_parser]",
    "remove-exporter:otel/collector.yaml:service.pipelines.traces.exporters.otlp_http/dynatrace",
    "sampling-zero:kong/kong.yaml:plugins[opentelemetry].config.sampling_rate",
    "propagation:kong/kong.yaml:plugins[opentelemetry].config.propagation.inject",
    "custom-fields-lua:kong/kong.yaml:plugins[tcp-log].config.custom_fields_by_lua.trace_id.returns-table",
    "sampler:otel/instrumentation.yaml:spec.sampler.type=traceidratio",
    "propagators:otel/instrumentation.yaml:spec.propagators=b3",
    "env-protocol:otel/instrumentation.yaml:spec.python.env.OTEL_EXPORTER_OTLP_PROTOCOL",
)


def test_the_sample_covers_all_three_files_with_stack_and_lint_kills() -> None:
    manifests = paths.manifests_dir()
    mutants = {m.id: m for m in catalog.generate(manifests)}
    assert set(SAMPLE) <= set(mutants), set(SAMPLE) - set(mutants)
    assert len({mutants[i].file for i in SAMPLE}) == 3
    with tempfile.TemporaryDirectory() as tmp:
        workspace = prepare_workspace(manifests, Path(tmp))
        by_lint = {i for i in SAMPLE if lint_verdict(mutants[i], workspace) is not None}
    assert by_lint, "the sample should show lint's static kills too"
    # each file has a mutant that needs the running stack (its apply path: reload, restart, services' restart)
    assert {mutants[i].file for i in set(SAMPLE) - by_lint} == {mutants[i].file for i in SAMPLE}, by_lint


def test_every_sampled_mutant_is_killed(stack: Stack, tmp_path: Path) -> None:
    manifests = paths.manifests_dir()
    mutants = {m.id: m for m in catalog.generate(manifests)}
    originals = {name: t.documents for name, t in catalog.targets(manifests).items()}
    runner = Runner(manifests, tmp_path, stack=stack)  # the session's stack; restored after each mutant
    started = time.monotonic()
    verdicts = [runner.judge(mutants[mutant_id], originals) for mutant_id in SAMPLE]
    lines = [f"{v.verdict:9} {v.killer or '-':8} {v.cause or '-':18} {v.seconds:5.1f} s  {v.mutant}  "
             f"({', '.join(f'{k} {t:.1f}' for k, t in v.phases.items()) or 'no stack'})" for v in verdicts]
    mean = sum(v.seconds for v in verdicts) / len(verdicts)
    print(f"mutation sample: {len(verdicts)} mutants in {time.monotonic() - started:.0f} s, mean verdict time "
          f"{mean:.1f} s\n" + "\n".join(lines))
    survivors = [f"{v.mutant}: {v.why}" for v in verdicts if v.verdict != KILLED]
    assert not survivors, "mutants the gate let through:\n" + "\n".join(survivors)
