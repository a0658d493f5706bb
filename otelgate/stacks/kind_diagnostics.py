"""Everything a person needs after a failed bring-up or suite on the kind/external stacks, written to one folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otelgate.cluster_topology import collector_identity
from otelgate.stacks.kind_addons import Context, instrumentation_report
from otelgate.stacks.kube import CommandFailed, Runner


def collect_diagnostics(ctx: Context, dest: Path, *, sink: Any = None, kind_cluster: str | None = None) -> Path:
    """KTF's bundle in ``dest``: get/describe of all resources, events, every pod's logs (previous containers too),
    Helm releases and values, the collector's logs, the instrumentation report, the sink's dump and ``kind export
    logs``. Each file is written even when another command fails; the token is redacted everywhere."""
    dest.mkdir(parents=True, exist_ok=True)
    runner = ctx.runner
    failures: list[str] = []

    def save(name: str, argv: Sequence[str], timeout: float = 120.0) -> None:
        try:
            result = runner.run(argv, timeout=timeout, check=False)
            text = result.stdout + (f"\n--- stderr ---\n{result.stderr}" if result.stderr.strip() else "")
        except CommandFailed as exc:
            text = str(exc)
            failures.append(f"{name}: {exc}")
        (dest / name).write_text(runner.redact(text))

    save("kubectl_get_all.yaml", ["kubectl", "get", "all,configmaps,endpointslices,serviceaccounts,roles,"
                                  "rolebindings,opentelemetrycollectors,instrumentations", "-A", "-o", "yaml"])
    save("kubectl_get_all_wide.txt", ["kubectl", "get", "all", "-A", "-o", "wide"])
    save("kubectl_describe_all.txt", ["kubectl", "describe", "all,opentelemetrycollectors,instrumentations", "-A"])
    save("kubectl_describe_nodes.txt", ["kubectl", "describe", "nodes"])
    save("events.txt", ["kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"])
    save("helm_list.txt", ["helm", "list", "-A"])
    for release in ctx.topology.releases:
        save(f"helm_values_{release.name}.yaml", ["helm", "get", "values", release.name, "-n", release.namespace,
                                                  "--all"])
    _pod_logs(runner, dest / "pod-logs", failures)
    try:
        name, namespace = collector_identity(ctx.manifests)
        save("collector.log", ["kubectl", "logs", f"deployment/{name}-collector", "-n", namespace,
                               "--all-containers", "--timestamps", "--tail=-1"])
    except (ValueError, OSError) as exc:
        failures.append(f"collector.log: {exc}")
    try:
        report = instrumentation_report(runner, ctx.topology.app_namespace)
        (dest / "instrumentation.txt").write_text("\n".join(s.line() for s in report) + "\n")
    except (CommandFailed, ValueError) as exc:
        failures.append(f"instrumentation.txt: {exc}")
    if sink is not None:
        try:
            (dest / "sink-dump.json").write_text(runner.redact(json.dumps(sink.dump(), indent=1)))
        except Exception as exc:
            failures.append(f"sink-dump.json: {exc!r}")
    if kind_cluster:
        save("kind_export_logs.txt", ["kind", "export", "logs", str(dest / "kind-logs"), "--name", kind_cluster],
             timeout=300.0)
    (dest / "diagnostics_failures.txt").write_text("\n".join(failures) + ("\n" if failures else "none\n"))
    return dest


def _pod_logs(runner: Runner, folder: Path, failures: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        pods = runner.json(["kubectl", "get", "pods", "-A"]).get("items") or []
    except (CommandFailed, ValueError) as exc:
        failures.append(f"pod list: {exc}")
        return
    for pod in pods:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        restarted = any(int(s.get("restartCount", 0)) > 0 for s in (pod.get("status") or {}).get(
            "containerStatuses") or [])
        variants: list[tuple[str, list[str]]] = [("", [])] + ([(".previous", ["--previous"])] if restarted else [])
        for suffix, extra in variants:
            try:
                result = runner.run(["kubectl", "logs", name, "-n", namespace, "--all-containers", "--prefix",
                                     "--timestamps", *extra], timeout=60.0, check=False)
                text = result.stdout + result.stderr
            except CommandFailed as exc:
                text = str(exc)
                failures.append(f"logs {namespace}/{name}: {exc}")
            (folder / f"{namespace}__{name}{suffix}.log").write_text(runner.redact(text))
