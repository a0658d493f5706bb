"""``otelgate up --stack docker``: the plan (``--dry-run``), the prerequisites check and a bring-up for a person to
explore; :data:`STACK` is the docker stack's :class:`otelgate.stacks.base.StackModule`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from otelgate.configdiff import changes
from otelgate.stacks.base import StackEntry, StackOptions, StackSettings, StackStartError
from otelgate.stacks.console import print_status_until_interrupted, print_urls, sink_status, stop_on_signals
from otelgate.stacks.docker.daemon import daemon_problem
from otelgate.stacks.docker.specs import (
    CANARY_PATH,
    COLLECTOR_CONFIG_PATH,
    COLLECTOR_YAML,
    DOCKERFILE,
    KONG_DECLARATIVE_PATH,
    KONG_VALUES,
    KONG_YAML,
    MANIFESTS,
    SECRET_PLACEHOLDER,
    TOPOLOGY,
    ContainerSpec,
    container_specs,
    spec_by_name,
)
from otelgate.stacks.docker.stack import DockerStack


def _describe_spec(index: int, spec: ContainerSpec) -> list[str]:
    lines = [f"{index}. container {spec.name}: {spec.purpose}",
             f"     image: {spec.image}" + (" (built above)" if spec.build else " (pulled if missing)"),
             f"     network alias: {', '.join(spec.aliases)}",
             f"     entrypoint: {' '.join(spec.entrypoint) if spec.entrypoint else '(image default)'}",
             f"     command: {' '.join(spec.command) if spec.command else '(image default)'}"]
    env_lines = [f"{key}={value}" for key, value in sorted(spec.env.items())]
    env_lines += [f"{key}={SECRET_PLACEHOLDER}" for key in spec.secret_env]
    lines.append("     env:" + ("" if env_lines else " (none)"))
    lines.extend(f"       {line}" for line in env_lines)
    for item in spec.files:
        lines.append(f"     file: {item.target} <- <workdir>/config/{item.host_name} (copied in before start)")
    for port in spec.ports:
        where = "published on a random host port" if port.published else "network only"
        lines.append(f"     port: {port.port}/tcp {port.purpose} ({where})")
    lines.append(f"     ready when: {spec.wait.describe()}")
    return lines


def _rewrite_lines(settings: StackSettings, specs: Sequence[ContainerSpec]) -> list[str]:
    from otelgate import kongconfig
    from otelgate.collector import load_collector_resource, resource_config
    from otelgate.collector.config import rewritten_by

    lines = ["derived configs (the manifests, changed only at their documented rewrites):",
             f"  kong.yaml vs {KONG_YAML} (otelgate.kongconfig.KONG_REWRITES + overrides):"]
    kong_doc = yaml.safe_load(spec_by_name(specs, "kong").file(KONG_DECLARATIVE_PATH).content)
    original = kongconfig.load(KONG_YAML)
    for change in changes(original, kong_doc):
        lines.append(f"    {change.dotted}: {'(removed)' if change.after is None else json.dumps(change.after)}")
    lines.append(f"  collector config vs {COLLECTOR_YAML} spec.config (otelgate.collector.REWRITES):")
    collector_doc = yaml.safe_load(spec_by_name(specs, "collector").file(COLLECTOR_CONFIG_PATH).content)
    for change in changes(resource_config(load_collector_resource(COLLECTOR_YAML)), collector_doc):
        rule = rewritten_by(change.path)
        lines.append(f"    {change.dotted} = {json.dumps(change.after)}"
                     + (f"  [{rule.why}]" if rule else "  [NOT A DOCUMENTED REWRITE]"))
    return lines


def plan(settings: StackSettings | None = None, sink_image: str | None = None) -> list[str]:
    """What ``DockerStack.start`` would do, in order (``otelgate up --stack docker --dry-run``)."""
    settings = settings or StackSettings()
    specs = container_specs(settings, sink_image_ref=sink_image)
    builds = {spec.build.tag: spec.build for spec in specs if spec.build}
    pulls = sorted({spec.image for spec in specs if spec.build is None})
    lines = ["docker stack plan (testcontainers-python; nothing is started by --dry-run):",
             f"settings: sampling_rate={settings.sampling_rate} tracing_sampling_rate={settings.tracing_sampling_rate}",
             "prerequisites: a reachable Docker daemon (otelgate up --stack docker --check-prerequisites) and "
             "pip install 'otelgate[docker]'"]
    step = 1
    for tag, build in builds.items():
        lines.append(f"{step}. image {tag}: built from {build.context / build.dockerfile} (context {build.context}, "
                     ".dockerignore applies) unless the tag exists; the tag hashes what goes into the image")
        step += 1
    if not builds:
        sink = spec_by_name(specs, "sink").image
        lines.append(f"{step}. image {sink}: from --sink-image / OTELGATE_SINK_IMAGE, not built")
        step += 1
    lines.append(f"{step}. images pulled if missing: {', '.join(pulls)}")
    step += 1
    lines.append(f"{step}. network otelgate-<run id> (a user-defined bridge: containers reach each other by alias)")
    step += 1
    for spec in specs:
        lines.extend(_describe_spec(step, spec))
        step += 1
    lines.append(f"{step}. all containers start at once; then each is waited on in the order above (ready when ...)")
    step += 1
    lines.append(f"{step}. canary: GET {CANARY_PATH} through Kong's proxy with a traceparent Kong samples at any rate "
                 "above 0, until Kong's span of that trace is in the sink (then up to 10 s more for the rest of its "
                 f"trace, {' -> '.join(TOPOLOGY.canary.service_path)}); then the sink is reset")
    step += 1
    lines.append(f"{step}. end: containers and network removed (kept with --keep / pytest --keep-stack); on a failed "
                 "bring-up every container's log is written to <workdir>/diagnostics first")
    lines.extend(_rewrite_lines(settings, specs))
    return lines


def check_prerequisites(sink_image: str | None = None) -> list[str]:
    """What would stop the docker stack from starting (empty when it can start)."""
    problems: list[str] = []
    for module in ("testcontainers", "docker"):
        try:
            __import__(module)
        except ImportError:
            problems.append(f"python package {module!r} is not installed: pip install 'otelgate[docker]'")
    problem = daemon_problem()
    if problem is not None:
        problems.append(problem)
    for path in (KONG_YAML, KONG_VALUES, COLLECTOR_YAML):
        if not path.is_file():
            problems.append(f"{path} is missing")
    if not (sink_image or os.environ.get("OTELGATE_SINK_IMAGE")) and not DOCKERFILE.is_file():
        problems.append(f"{DOCKERFILE} is missing: run from an otelgate source checkout, or pass --sink-image (or set "
                        "OTELGATE_SINK_IMAGE) with a built otelgate image")
    if not problems:
        try:
            container_specs(sink_image_ref=sink_image)
        except Exception as exc:  # a broken manifest fails here, before any image is pulled
            problems.append(f"the container specs cannot be derived from the manifests: {exc}")
    return problems


def up(options: StackOptions, status_interval: float) -> int:
    """``otelgate up --stack docker``: bring the stack up, print its URLs and status lines until Ctrl-C."""
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="otelgate-docker-"))
    stop_on_signals()
    print(f"starting the docker stack (real Kong, the collector image, the sink); logs in {workdir}", flush=True)
    try:
        stack = DockerStack.start(options.settings, workdir, keep=options.keep, sink_image=options.sink_image)
    except KeyboardInterrupt:
        print("interrupted during bring-up; every container started was removed", file=sys.stderr)
        return 130
    except StackStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"up in {stack.bring_up_seconds:.1f} s (first green canary). URLs:")
        print_urls(stack.urls())
        print(f"try:  curl -i {stack.gateway_url}{CANARY_PATH}     (Ctrl-C stops everything)", flush=True)
        # the collector's pid may live in another kernel (Docker Desktop, a remote daemon): show its container state
        print_status_until_interrupted(lambda: sink_status(stack.sink, stack.collector_state()), status_interval)
    finally:
        print("\nstopping the docker stack ...", flush=True)
        stack.close()
    return 0


STACK = StackEntry("docker", MANIFESTS, plan_lines=lambda options: plan(options.settings, options.sink_image),
                   problems=lambda options: check_prerequisites(options.sink_image),
                   bring_up=lambda options: DockerStack.start(options.settings, options.workdir, keep=options.keep,
                                                              sink_image=options.sink_image),
                   serve=up)
