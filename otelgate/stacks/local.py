"""The local stack: the whole pipeline as processes on 127.0.0.1, no Docker, no Kubernetes.

    client -> Kong 3.9 simulator (a test double; kong.yaml) -> demo services under the real zero-code instrumentation
                       |  traces, tcp-log, /metrics scraped                  |  traces, metrics
                       v                                                     v
               the real OpenTelemetry Collector (config derived from manifests/otel/collector.yaml)
                       v
               otelgate's fake Dynatrace sink (dynatrace profile, a generated token)

Bring-up is in dependency order, each tier waited on by a real readiness signal: sink ``/healthz`` -> collector
health check -> the demo services' ``/healthz`` -> the simulator's Admin ``/status`` and proxy port -> one canary
request through the gateway whose Kong root span reaches the sink (the pipeline carries data; whether the whole path
joins one trace is the trace claim's verdict). Every process logs
to ``<workdir>/logs/<name>.log``. A failure anywhere tears down what was started, so nothing outlives the stack.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from otelgate import paths, topology
from otelgate.demoapp.launch import Instrumentation, service_argv
from otelgate.procs import ManagedProcess, free_port, port_is_open, python_argv, wait_port_free
from otelgate.redact import redact
from otelgate.stacks.base import (
    COLLECTOR_SIDE,
    KONG_RESTART,
    KONG_SIDE,
    URL_COLLECTOR_HEALTH,
    URL_COLLECTOR_METRICS,
    StackSettings,
    StackStartError,
    append_timing,
    generate_token,
    summary_tail,
    write_sink_dump,
)
from otelgate.waiting import poll_until

if TYPE_CHECKING:
    from otelgate.collector.config import CollectorPorts
    from otelgate.collector.process import CollectorProcess
    from otelgate.sink.client import SinkClient

HOST = "127.0.0.1"
MANIFESTS = paths.manifests_dir()  # read once, at import (see otelgate.stacks.base.manifests_problem)
KONG_YAML = paths.manifest("kong/kong.yaml")
COLLECTOR_YAML = paths.manifest("otel/collector.yaml")
# names and routes from the deployment's otelgate.toml (otelgate.topology), read when this module is imported
TOPOLOGY = topology.current()
TOKEN_ENV = TOPOLOGY.token_env
KONG_SERVICE_NAME = TOPOLOGY.kong_service_name
LOCAL_KONG_DEPLOYMENT_NAME = TOPOLOGY.deployment_name("local")
GATEWAY_SERVICES = TOPOLOGY.gateway_services   # services Kong routes to
DEMO_SERVICES = TOPOLOGY.demo_services         # also the start order inside the services tier (dependencies first)
CANARY_PATH = TOPOLOGY.canary_path


# stacks not closed yet; closed at interpreter exit so no process outlives otelgate even if a caller forgot close()
_OPEN_STACKS: set[LocalStack] = set()


@atexit.register
def _close_open_stacks() -> None:
    for stack in list(_OPEN_STACKS):
        with contextlib.suppress(Exception):
            stack.close()


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds of the stack's own waits (seconds). Generous for a loaded 2-core CI runner."""

    process_ready: float = 30.0
    collector_healthy: float = 30.0
    canary: float = 30.0
    canary_services: float = 5.0   # the rest of the canary's trace, after its Kong span (not a readiness condition)
    reconfigure: float = 15.0
    port_release: float = 10.0


@dataclass
class LocalPorts:
    sink: int = field(default_factory=free_port)
    proxy: int = field(default_factory=free_port)
    kong_status: int = field(default_factory=free_port)
    kong_admin: int = field(default_factory=free_port)
    services: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in DEMO_SERVICES})


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class LocalStack:
    """Implements :class:`otelgate.stacks.base.Stack` with processes on 127.0.0.1 (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        settings: StackSettings | None = None,
        workdir: Path | None = None,
        *,
        collector_binary: Path | None = None,
        timeouts: Timeouts | None = None,
        kong_yaml: Path = KONG_YAML,
        collector_yaml: Path = COLLECTOR_YAML,
    ) -> None:
        self.settings = settings or StackSettings()
        self.workdir = Path(workdir) if workdir is not None else Path.cwd() / "artifacts" / "local-stack"
        self.timeouts = timeouts or Timeouts()
        self.kong_yaml = kong_yaml
        self.collector_yaml = collector_yaml
        self._collector_binary = collector_binary
        self.ports = LocalPorts()
        self._token = generate_token()
        self.processes: dict[str, ManagedProcess] = {}
        self.collector: CollectorProcess | None = None
        self._collector_ports: CollectorPorts | None = None
        self.gateway_url = f"http://{HOST}:{self.ports.proxy}"
        self.sink_url = f"http://{HOST}:{self.ports.sink}"
        self._sink: SinkClient | None = None
        # the value the collector's attributes/kong processor inserts (KONG_DEPLOYMENT_NAME in the collector's env)
        self.kong_deployment_name = LOCAL_KONG_DEPLOYMENT_NAME
        self.bring_up_seconds: float | None = None
        self.step_seconds: dict[str, float] = {}
        self.canary_trace_id: str | None = None
        self.canary_services = ""  # the services seen in the canary's trace (for the summary)
        self._closed = False
        self._collector_started = False

    # --- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, settings: StackSettings | None = None, workdir: Path | None = None, **options: Any) -> LocalStack:
        """Bring the stack up and wait until a canary request's Kong span reached the sink; tear down on failure."""
        return cls(settings, workdir, **options).bring_up()

    def bring_up(self) -> LocalStack:
        """Start every tier in dependency order; on any failure (also Ctrl-C) stop what was started, re-raise."""
        try:
            self._bring_up()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bring_up(self) -> None:
        _OPEN_STACKS.add(self)
        started = time.monotonic()
        for sub in ("logs", "config"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        steps = (("sink", self._start_sink), ("collector", self._start_collector),
                 ("services", self._start_services), ("kong simulator", self._start_kong), ("canary", self._canary))
        for step, run in steps:
            step_started = time.monotonic()
            run()
            self.step_seconds[step] = time.monotonic() - step_started
        self.bring_up_seconds = time.monotonic() - started
        steps_text = ", ".join(f"{step} {seconds:.2f}" for step, seconds in self.step_seconds.items())
        self._write_summary_line(f"bring-up to first green canary: {self.bring_up_seconds:.2f} s ({steps_text})")

    def close(self) -> None:
        """Stop every process in reverse start order and wait until each port is released."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for name in ("kong", *reversed(DEMO_SERVICES)):
            errors.extend(self._stop_process(name))
        errors.extend(self._stop_collector())  # after its senders, so their last batches still land
        errors.extend(self._stop_process("sink"))
        if self._sink is not None:
            self._sink.close()
        for port in self.bound_ports():
            try:
                wait_port_free(HOST, port, timeout=self.timeouts.port_release)
            except AssertionError as exc:
                errors.append(str(exc))
        _OPEN_STACKS.discard(self)
        if errors:
            raise RuntimeError("local stack teardown was incomplete:\n" + "\n".join(errors))

    def _stop_process(self, name: str) -> list[str]:
        proc = self.processes.get(name)
        if proc is None:
            return []
        try:
            proc.stop()
        except Exception as exc:
            return [f"{name}: {exc!r}"]
        return []

    def bound_ports(self) -> list[int]:
        """Only ports this stack bound: a port allocated for a tier that never started may be someone else's now."""
        started = set(self.processes)
        ports = [self.ports.sink] if "sink" in started else []
        ports += [port for name, port in self.ports.services.items() if name in started]
        if "kong" in started:
            ports += [self.ports.proxy, self.ports.kong_status, self.ports.kong_admin]
        if self._collector_started and self._collector_ports is not None:
            ports += _collector_port_values(self._collector_ports)
        return ports

    # --- the tiers -------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", env=env, cwd=self.workdir)
        self.processes[name] = proc.start()
        return proc

    def _wait_http(self, proc: ManagedProcess, url: str) -> None:
        try:
            proc.wait_ready(lambda: _http_ok(url), what=f"GET {url} -> 200", timeout=self.timeouts.process_ready)
        except AssertionError as exc:  # includes ProcessDied's sibling WaitTimeout; ProcessDied passes through
            raise StackStartError(redact(str(exc), self._token)) from None

    def _start_sink(self) -> None:
        env = {**os.environ, TOKEN_ENV: self._token}
        argv = python_argv("otelgate", "sink", "--host", HOST, "--port", str(self.ports.sink),
                           "--profile", "dynatrace", "--token-env", TOKEN_ENV)
        self._wait_http(self._spawn("sink", argv, env), f"{self.sink_url}/healthz")
        from otelgate.sink.client import SinkClient

        self._sink = SinkClient(self.sink_url)

    def _start_collector(self) -> None:
        from otelgate import collector as collector_mod
        from otelgate.collector.config import CollectorPorts, load_collector_resource, local_env
        from otelgate.collector.process import CollectorProcess

        binary = self._collector_binary or collector_mod.find_collector()
        if self._collector_ports is None:
            self._collector_ports = CollectorPorts.allocate()
        resource = load_collector_resource(self.settings.collector_yaml or self.collector_yaml)
        config = self._collector_config(resource)
        _write_yaml(self.workdir / "config" / "collector.yaml", config, self._token)
        env = local_env(resource, self._token, **{TOPOLOGY.deployment_env: self.kong_deployment_name})
        proc = CollectorProcess(binary, config, self.workdir / "collector", env=env)
        self.collector = proc
        self._collector_started = True
        proc.start()
        try:
            proc.wait_healthy(timeout=self.timeouts.collector_healthy)
        except AssertionError as exc:
            raise StackStartError(redact(str(exc), self._token)) from None

    def _collector_config(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        from otelgate.collector.config import derive_local_config

        assert self._collector_ports is not None
        return derive_local_config(
            resource["spec"]["config"],
            ports=self._collector_ports,
            sink_endpoint=f"{self.sink_url}/api/v2/otlp",
            kong_status_target=f"{HOST}:{self.ports.kong_status}",
            drop_processors=self.settings.drop_processors,
            exporter_token=self.settings.exporter_token,
            exporter_settings=self.settings.exporter_settings,
        )

    def _stop_collector(self) -> list[str]:
        if self.collector is None:
            return []
        try:
            self.collector.stop()
        except Exception as exc:
            return [f"collector: {exc!r}"]
        finally:
            self.collector = None
        return []

    def _start_services(self) -> None:
        assert self._collector_ports is not None
        endpoint = f"http://{HOST}:{self._collector_ports.otlp_http}"
        instrumentation = (Instrumentation.from_manifest(endpoint, self.settings.instrumentation_yaml)
                           if self.settings.instrumentation_yaml else Instrumentation.from_manifest(endpoint))
        membership = f"{HOST}:{self.ports.services['membership']}"
        started = []
        for service in DEMO_SERVICES:  # all four start at once; each is waited on below
            env = instrumentation.env(service)
            if service == "coupon":
                env["MEMBERSHIP_SERVICE_HOST"] = membership
            started.append(self._spawn(service, service_argv(service, self.ports.services[service]), env))
        for proc in started:
            self._wait_http(proc, f"{self._service_url(proc.name)}/healthz")

    def _service_url(self, service: str) -> str:
        return f"http://{HOST}:{self.ports.services[service]}"

    def _kong_config(self, settings: StackSettings) -> dict[str, Any]:
        from otelgate import kongconfig

        assert self._collector_ports is not None
        return kongconfig.derive_kong_config(
            kongconfig.load(settings.kong_yaml or self.kong_yaml),
            # a hostname, as on the cluster: Kong resolves names (kong.dns span) but not IP literals
            upstreams={name: f"http://localhost:{self.ports.services[name]}" for name in GATEWAY_SERVICES},
            otlp_traces_endpoint=f"http://{HOST}:{self._collector_ports.otlp_http}/v1/traces",
            tcp_log_host=HOST,
            tcp_log_port=self._collector_ports.tcplog,
            plugin_overrides=settings.kong_plugin_overrides(),
        )

    def _start_kong(self) -> None:
        config_path = self.workdir / "config" / "kong.yaml"
        _write_yaml(config_path, self._kong_config(self.settings), None)
        argv = python_argv("otelgate.kongsim", "--config", str(config_path),
                           "--proxy-port", str(self.ports.proxy), "--status-port", str(self.ports.kong_status),
                           "--admin-port", str(self.ports.kong_admin),
                           "--tracing-sampling-rate", repr(float(self.settings.tracing_sampling_rate)),
                           "--tracing-instrumentations", "all")
        proc = self._spawn("kong", argv, dict(os.environ))
        self._wait_http(proc, f"http://{HOST}:{self.ports.kong_status}/status/ready")
        self._wait_http(proc, f"{self.kong_admin_url}/status")
        try:
            proc.wait_ready(lambda: port_is_open(HOST, self.ports.proxy), what=f"proxy port {self.ports.proxy}",
                            timeout=self.timeouts.process_ready)
        except AssertionError as exc:
            raise StackStartError(str(exc)) from None

    @property
    def kong_admin_url(self) -> str:
        return f"http://{HOST}:{self.ports.kong_admin}"

    # --- readiness: one canary through the whole pipeline -----------------------------------------------------

    def _canary(self) -> None:
        """One GET through the gateway; ready when its Kong root span is in the sink (the pipeline carries data).
        Whether the whole path (Kong .. membership) joined one trace is the trace claim's verdict, not readiness."""
        response = httpx.get(f"{self.gateway_url}{CANARY_PATH}", timeout=10.0)
        if response.status_code != 200:
            raise StackStartError(
                f"canary GET {CANARY_PATH} through the gateway answered {response.status_code}: {response.text[:500]}"
                f"\n--- kong log tail ---\n{self.processes['kong'].log_tail()}")
        request_id = response.headers.get("x-kong-request-id", "")
        try:
            self.canary_trace_id = self._wait_canary_root(request_id)
        except AssertionError as exc:
            tails = "\n".join(f"--- {name} log tail ---\n{self._log_tail(name)}" for name in ("collector", "kong"))
            raise StackStartError(f"the canary's Kong span did not reach the sink: {exc}\n{tails}") from None
        self.canary_services = self._canary_services(self.canary_trace_id)
        self.sink.reset()  # the suites start from an empty sink; the canary proved the pipeline carries data

    def _wait_canary_root(self, request_id: str) -> str:
        sink = self.sink

        def kong_root() -> list[dict[str, Any]]:
            return sink.spans(service=KONG_SERVICE_NAME, name="kong", **{"attr.kong.request.id": request_id})

        roots = poll_until(kong_root, bool, what=f"the canary's kong span (kong.request.id={request_id})",
                           timeout=self.timeouts.canary, interval=0.1)
        return str(roots[0]["trace_id"])

    def _canary_services(self, trace_id: str) -> str:
        """The services seen in the canary's trace, after a short bounded wait for the whole declared path (so its
        late spans do not land after the reset); reported in the summary, never a reason to fail the bring-up."""
        wanted = set(TOPOLOGY.canary.service_path)
        seen: set[str] = set()

        def services_in_trace() -> set[str]:
            seen.update(str(s.get("service_name")) for s in self.sink.spans(trace_id=trace_id))
            return seen

        with contextlib.suppress(AssertionError):
            poll_until(services_in_trace, lambda found: wanted <= found, what=f"the canary trace {trace_id}",
                       timeout=self.timeouts.canary_services, interval=0.1)
        missing = sorted(wanted - seen)
        return f"services {', '.join(sorted(seen))}" + (f"; missing {', '.join(missing)}" if missing else "")

    # --- the Stack protocol ----------------------------------------------------------------------------------

    @property
    def sink(self) -> SinkClient:
        if self._sink is None:
            raise RuntimeError("the sink is not running (the stack was not started)")
        return self._sink

    def reconfigure(self, **changes: Any) -> None:
        """Apply changed settings and wait until they are in effect.

        Kong-side (``sampling_rate``, ``kong_plugin_config``): the simulator's config is re-derived from kong.yaml
        plus overrides and POSTed to its Admin API ``/config`` (as DB-less Kong is reconfigured).
        ``tracing_sampling_rate`` is a kong.conf setting, so the simulator restarts with it. Collector-side
        (``drop_processors``, ``exporter_token``, ``collector_running``): the collector restarts with the
        re-derived config (or stays stopped). Whole manifest files (``kong_yaml``, ``collector_yaml``,
        ``instrumentation_yaml``): a Kong reload, a collector restart, the demo services restarted with the new env.
        """
        new = self.settings.with_changes(**changes)
        changed = self.settings.differs_in(new)
        previous, self.settings = self.settings, new
        try:
            if changed & (COLLECTOR_SIDE | {"collector_yaml"}):
                self._restart_collector()
            if "instrumentation_yaml" in changed:
                self._restart_services()
            if changed & KONG_RESTART:
                self._restart_kong()
            elif changed & (KONG_SIDE | {"kong_yaml"}):
                self._post_kong_config()
        except BaseException:
            self.settings = previous
            raise

    def _post_kong_config(self) -> None:
        config = self._kong_config(self.settings)
        _write_yaml(self.workdir / "config" / "kong.yaml", config, None)
        response = httpx.post(f"{self.kong_admin_url}/config", json=config, timeout=self.timeouts.reconfigure)
        if response.status_code >= 300:
            raise RuntimeError(f"the Kong simulator refused the new config: HTTP {response.status_code} "
                               f"{response.text[:2000]}")
        wanted = str(response.json().get("configuration_hash") or "")
        if wanted:
            poll_until(self._kong_config_hash, lambda now: now == wanted,
                       what=f"the simulator's Admin /status to report configuration_hash {wanted}",
                       timeout=self.timeouts.reconfigure)

    def _kong_config_hash(self) -> str | None:
        status = httpx.get(f"{self.kong_admin_url}/status", timeout=2.0).json()
        value = status.get("configuration_hash") if isinstance(status, dict) else None
        return str(value) if value else None

    def _restart_kong(self) -> None:
        proc = self.processes.pop("kong")
        proc.stop()
        for port in (self.ports.proxy, self.ports.kong_status, self.ports.kong_admin):
            wait_port_free(HOST, port, timeout=self.timeouts.port_release)
        self._start_kong()

    def _restart_services(self) -> None:
        for name in reversed(DEMO_SERVICES):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop()
                wait_port_free(HOST, self.ports.services[name], timeout=self.timeouts.port_release)
        self._start_services()

    def _restart_collector(self) -> None:
        assert self._collector_ports is not None
        self._stop_collector()
        for port in _collector_port_values(self._collector_ports):
            wait_port_free(HOST, port, timeout=self.timeouts.port_release)
        if self.settings.collector_running:
            self._start_collector()

    def collector_pid(self) -> int | None:
        """The collector process' pid (for CPU/RSS sampling), or None while it is stopped."""
        return self.collector.pid if self.collector is not None and self.collector.alive() else None

    def urls(self) -> dict[str, str]:
        urls = {
            "gateway (Kong simulator proxy)": self.gateway_url,
            "kong admin API": self.kong_admin_url,
            "kong status API (/metrics)": f"http://{HOST}:{self.ports.kong_status}/metrics",
            "sink API": f"{self.sink_url}/api/",
            "sink ingest (Dynatrace OTLP)": f"{self.sink_url}/api/v2/otlp",
        }
        if self._collector_ports is not None:
            cp = self._collector_ports
            urls |= {
                "collector OTLP/HTTP": f"http://{HOST}:{cp.otlp_http}",
                URL_COLLECTOR_HEALTH: f"http://{HOST}:{cp.health}/",
                URL_COLLECTOR_METRICS: f"http://{HOST}:{cp.telemetry}/metrics",
                "collector prometheus exporter": f"http://{HOST}:{cp.prometheus_exporter}/metrics",
            }
        urls |= {f"service {name}": self._service_url(name) for name in DEMO_SERVICES}
        return urls

    # --- diagnostics -----------------------------------------------------------------------------------------

    def _log_tail(self, name: str, lines: int = 40) -> str:
        if name == "collector":
            return redact(self.collector.log_tail(lines), self._token) if self.collector else "<collector not running>"
        proc = self.processes.get(name)
        return redact(proc.log_tail(lines), self._token) if proc else f"<{name} not started>"

    def diagnose(self, dest: Path) -> Path:
        """Process logs, derived configs, the sink dump and a summary, all with the token redacted."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for path in self._log_files():
            _copy_redacted(path, dest / "logs" / path.name, self._token)
        for path in sorted((self.workdir / "config").glob("*")):
            _copy_redacted(path, dest / "config" / path.name, self._token)
        write_sink_dump(dest, lambda: self.sink, self._token)
        (dest / "summary.txt").write_text(redact(self._summary(), self._token))
        return dest

    def _log_files(self) -> Iterator[Path]:
        yield from sorted((self.workdir / "logs").glob("*.log"))
        if (self.workdir / "collector").exists():
            yield from sorted((self.workdir / "collector").rglob("*.log"))

    def _summary(self) -> str:
        lines = [f"otelgate local stack (workdir {self.workdir})", f"settings: {self.settings}",
                 f"kong deployment name (collector attribute): {self.kong_deployment_name}",
                 f"canary trace: {self.canary_trace_id} ({self.canary_services or 'not sent'})"]
        if self.bring_up_seconds is not None:
            steps = ", ".join(f"{step} {seconds:.2f} s" for step, seconds in self.step_seconds.items())
            lines.append(f"bring-up to first green canary: {self.bring_up_seconds:.2f} s ({steps})")
        lines.append("processes:")
        for name, proc in self.processes.items():
            state = "running" if proc.alive() else f"exited ({proc.popen.returncode if proc.popen else 'never'})"
            lines.append(f"  {name}: {state}; log {proc.log_path}")
        if self.collector is not None:
            lines.append(f"  collector: pid {self.collector_pid()}; log {self.collector.log_path}")
        else:
            lines.append("  collector: not running")
        lines.append(f"kong simulator lost (its status API): {self._simulator_losses()}")
        lines += summary_tail(self.urls(), lambda: self.sink.stats())
        return "\n".join(lines) + "\n"

    def _simulator_losses(self) -> str:
        """Spans the simulator's exporter dropped and tcp-log lines it could not deliver (Kong only logs these)."""
        try:
            lost = httpx.get(f"{self.kong_admin_url}/status", timeout=2.0).json()["otelgate_telemetry_lost"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return f"unknown ({type(exc).__name__}: the simulator's Admin API did not say)"
        return f"{lost['spans_dropped']} spans dropped, {lost['log_lines_lost']} tcp-log lines"

    def _write_summary_line(self, line: str) -> None:
        append_timing(self.workdir, line)


# --- helpers around the collector module (kept here so the contract is used in one place) ------------------------


def _collector_port_names(ports_type: type) -> list[str]:
    return list(getattr(ports_type, "__dataclass_fields__", {}) or ports_type.__annotations__)


def _collector_port_values(ports: object) -> list[int]:
    return [int(getattr(ports, name)) for name in _collector_port_names(type(ports))]


def _write_yaml(path: Path, data: Any, secret: str | None) -> None:
    """Write a derived config for people to read (diagnose); the token is never written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(yaml.safe_dump(data, sort_keys=False), secret))


def _copy_redacted(src: Path, dst: Path, secret: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_file():
        return
    try:
        dst.write_text(redact(src.read_text(errors="replace"), secret))
    except UnicodeError:
        shutil.copyfile(src, dst)
