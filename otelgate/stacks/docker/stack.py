"""The docker stack itself: :class:`DockerStack` starts the containers :mod:`.specs` describes on one network, waits
until each serves and a canary trace reaches the sink, applies changed settings, and writes diagnostics."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

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
from otelgate.stacks.docker.daemon import daemon_problem, testcontainers
from otelgate.stacks.docker.evidence import (
    RECONFIGURE_DONE,
    KongReloadFailed,
    ReloadEvidence,
    canary_services,
    canary_traceparent,
    wait_canary_root,
    worker_count,
)
from otelgate.stacks.docker.specs import (
    CANARY_PATH,
    COLLECTOR_TELEMETRY,
    KONG_ADMIN_PORT,
    KONG_DECLARATIVE_PATH,
    KONG_PROXY_PORT,
    KONG_STATUS_PORT,
    LABEL_RUN,
    LABEL_STACK,
    LOOPBACK,
    SINK_PORT,
    ContainerSpec,
    ImageBuild,
    Timeouts,
    container_specs,
    effective_sampling_rate,
    kong_deployment_name,
    spec_by_name,
)
from otelgate.waiting import poll_until

if TYPE_CHECKING:
    from otelgate.sink.client import SinkClient


class ContainerExited(Exception):
    """A container stopped while the stack waited for it to serve (not retried)."""


@dataclass
class _Running:
    spec: ContainerSpec
    container: Any            # testcontainers DockerContainer
    generation: int = 0       # bumped each time the container is replaced


class DockerStack:
    """Implements :class:`otelgate.stacks.base.Stack` with containers (see the module docstring)."""

    name = "docker"

    def __init__(self, settings: StackSettings | None = None, workdir: Path | None = None, *, keep: bool = False,
                 timeouts: Timeouts | None = None, sink_image: str | None = None) -> None:
        self.settings = settings or StackSettings()
        self.workdir = Path(workdir) if workdir is not None else Path.cwd() / "artifacts" / "docker-stack"
        self.keep = keep
        self.timeouts = timeouts or Timeouts()
        self.run_id = uuid.uuid4().hex[:8]
        self._token = generate_token()
        self.sink_image = sink_image              # a built sink image to use (None: OTELGATE_SINK_IMAGE, else build)
        self.specs = container_specs(self.settings, sink_image_ref=sink_image)
        self.kong_deployment_name = kong_deployment_name(spec_by_name(self.specs, "collector"))
        self.running: dict[str, _Running] = {}
        self._generations: dict[str, int] = {}       # containers of one role so far (replacements count)
        self.network: Any = None
        self._network_created = False
        self.publish_ip: str | None = LOOPBACK      # None: the daemon's default (all interfaces)
        self.gateway_url = ""
        self.sink_url = ""
        self._sink: SinkClient | None = None
        self.bring_up_seconds: float | None = None
        self.canary_trace_id: str | None = None
        self.canary_services = ""  # the services seen in the canary's trace (for the summary)
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, settings: StackSettings | None = None, workdir: Path | None = None, **options: Any) -> DockerStack:
        """Bring the stack up (see :func:`plan`); on failure write diagnostics, tear down, raise."""
        stack = cls(settings, workdir, **options)
        try:
            stack._bring_up()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                where = stack.diagnose(stack.workdir / "diagnostics")
                stack._say(f"bring-up failed; container logs and configs are in {where}")
            try:
                stack.close(force=True)
            except Exception as teardown:  # report, but never hide why the bring-up failed
                stack._say(f"teardown after the failed bring-up was incomplete: {teardown}")
            if isinstance(exc, StackStartError | KeyboardInterrupt):
                raise
            raise StackStartError(redact(f"the docker stack did not come up: {exc}", stack._token)) from exc
        if stack.keep:
            stack._say("will be " + stack.kept_message())
        return stack

    def __enter__(self) -> DockerStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self, message: str) -> None:
        print(f"[docker stack] {message}", flush=True)

    def _bring_up(self) -> None:
        started = time.monotonic()
        # this run's files only: a reused workdir (artifacts/docker-stack) must not mix in an earlier run's logs
        for sub in ("logs", "config", "diagnostics"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        (self.workdir / "timings.txt").unlink(missing_ok=True)
        for sub in ("logs", "config"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        for spec in self.specs:  # written first: a failed start still leaves the derived configs to read
            self._write_files(spec)
        problem = daemon_problem()
        if problem is not None:
            raise StackStartError(problem)
        tc = testcontainers()
        if self.keep:
            # Ryuk removes every container of the session when this process ends; --keep must outlive it
            tc.config.ryuk_disabled = True
        self._choose_publish_address()
        self._ensure_images()
        self.network = tc.Network()
        self.network.name = f"otelgate-{self.run_id}"
        self.network.create()
        self._network_created = True
        for spec in self.specs:
            self._launch(spec)
        for spec in self.specs:
            self._wait_serving(spec.name)
        kong = self.running["kong"]
        self.gateway_url = self._url(kong, KONG_PROXY_PORT)
        self.sink_url = self._url(self.running["sink"], SINK_PORT)
        from otelgate.sink.client import SinkClient

        self._sink = SinkClient(self.sink_url)
        self._canary()
        self.bring_up_seconds = time.monotonic() - started
        self._timing(f"bring-up to first green canary: {self.bring_up_seconds:.2f} s")

    def _choose_publish_address(self) -> None:
        """Publish on 127.0.0.1 when the daemon is on this machine; a remote or DinD daemon needs its default."""
        from testcontainers.core.config import ConnectionMode
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient()
        try:
            local = client.get_connection_mode() == ConnectionMode.docker_host and client.host() in (
                "localhost", LOOPBACK, "::1")
        finally:
            client.client.close()
        self.publish_ip = LOOPBACK if local else None

    def _ensure_images(self) -> None:
        import docker

        client = docker.from_env()
        try:
            for spec in self.specs:
                if spec.build is not None:
                    self._build(client, spec.build)
            for image in sorted({s.image for s in self.specs if s.build is None}):
                self._pull(client, image)
        finally:
            client.close()

    def _build(self, client: Any, build: ImageBuild) -> None:
        import docker

        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(build.tag)
            return
        from testcontainers.core.image import DockerImage

        self._say(f"building {build.tag} from {build.context / build.dockerfile}")
        t0 = time.monotonic()
        log_path = self.workdir / "logs" / "sink-image-build.log"
        image = DockerImage(path=build.context, tag=build.tag, dockerfile_path=build.dockerfile, clean_up=False)
        try:
            image.build()
        except docker.errors.BuildError as exc:
            log_path.write_text("".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log))
            raise StackStartError(f"building {build.tag} failed: {exc}; build log in {log_path}") from None
        log_path.write_text("".join(str(chunk.get("stream", "")) for chunk in image.get_logs()))
        self._timing(f"built {build.tag} in {time.monotonic() - t0:.1f} s")

    def _pull(self, client: Any, image: str) -> None:
        import docker

        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(image)
            return
        self._say(f"pulling {image}")
        t0 = time.monotonic()
        repository, _, tag = image.rpartition(":")
        client.images.pull(repository, tag=tag)
        self._timing(f"pulled {image} in {time.monotonic() - t0:.1f} s")

    def _container_name(self, spec: ContainerSpec, generation: int) -> str:
        return f"otelgate-{self.run_id}-{spec.name}" + (f"-{generation}" if generation else "")

    def _launch(self, spec: ContainerSpec, generation: int = 0, host_ports: Mapping[int, int] | None = None) -> None:
        """Create and start one container (no waiting here: every container starts at once, then each is waited
        on). ``host_ports`` pins published ports, so a replaced Kong keeps the gateway URL the suites hold."""
        tc = testcontainers()
        self._write_files(spec)
        container = tc.DockerContainer(spec.image)
        container.with_name(self._container_name(spec, generation))
        container.with_network(self.network).with_network_aliases(*spec.aliases)
        container.with_envs(**{**spec.env, **{name: self._token for name in spec.secret_env}})
        for port in spec.ports:
            if port.published:
                host_port = (host_ports or {}).get(port.port)
                binding: Any = (self.publish_ip, host_port) if self.publish_ip else host_port
                container.ports[f"{port.port}/tcp"] = binding
        for item in spec.files:
            container.with_copy_into_container(item.content.encode(), item.target, 0o644)
        kwargs: dict[str, Any] = {"labels": {LABEL_STACK: "docker", LABEL_RUN: self.run_id}}
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = list(spec.entrypoint)
        container.with_kwargs(**kwargs)
        if spec.command is not None:
            container.with_command(list(spec.command))
        self.running[spec.name] = _Running(spec, container, generation)
        self._generations[spec.name] = generation + 1
        container.start()

    def _write_files(self, spec: ContainerSpec) -> None:
        for item in spec.files:
            (self.workdir / "config" / item.host_name).write_text(redact(item.content, self._token))

    def _url(self, running: _Running, port: int) -> str:
        """The host-side URL of a container port (testcontainers resolves remote, DinD and DooD daemons)."""
        host = LOOPBACK if self.publish_ip == LOOPBACK else running.container.get_container_host_ip()
        return f"http://{host}:{running.container.get_exposed_port(port)}"

    def _wait_serving(self, name: str) -> None:
        running = self.running[name]
        wait = running.spec.wait
        found: dict[str, str] = {}

        def observe() -> int:
            state = self._state(running)
            if state.get("Status") in ("exited", "dead"):
                raise ContainerExited(f"{name} exited with code {state.get('ExitCode')} "
                                      f"(OOMKilled={state.get('OOMKilled')}) before it served {wait.path}")
            if "url" not in found:  # the host port is known once the container runs
                found["url"] = self._url(running, wait.port) + wait.path
            return httpx.get(found["url"], timeout=2.0).status_code

        try:
            poll_until(observe, lambda status: status == wait.status,
                       what=f"{name} to serve: GET {wait.path} on container port {wait.port} -> {wait.status}",
                       timeout=wait.timeout, interval=0.25,
                       # ConnectionError: no port mapping yet; TimeoutError: testcontainers saw it stop running
                       # (the next observation reports the exit, with the log tail)
                       retry_on=(httpx.HTTPError, ConnectionError, TimeoutError))
        except (AssertionError, ContainerExited) as exc:
            url = found.get("url", "host port never mapped")
            raise StackStartError(redact(f"{exc} (url {url})\n--- {name} log tail ---\n{self._log_tail(name)}",
                                          self._token)) from None

    @staticmethod
    def _started(running: _Running) -> bool:
        try:
            running.container.get_wrapped_container()
        except Exception:  # testcontainers: ContainerStartException before start()
            return False
        return True

    def _state(self, running: _Running) -> dict[str, Any]:
        wrapped = running.container.get_wrapped_container()
        wrapped.reload()
        state: dict[str, Any] = wrapped.attrs.get("State") or {}
        return state

    # --- readiness: one canary through the whole pipeline --------------------------------------------------------

    def _canary(self) -> None:
        """One request through Kong with a crafted ``traceparent`` whose trace Kong samples at any rate above 0;
        ready when Kong's span of that trace is in the sink (the rest of the path is the trace claim's verdict). At
        rate 0 nothing can be traced: the canary then proves only that Kong proxies."""
        trace_id, traceparent = canary_traceparent()
        response = httpx.get(f"{self.gateway_url}{CANARY_PATH}", headers={"traceparent": traceparent}, timeout=10.0)
        if response.status_code != 200:
            raise StackStartError(f"canary GET {CANARY_PATH} through Kong answered {response.status_code}: "
                                   f"{response.text[:500]}\n--- kong log tail ---\n{self._log_tail('kong')}")
        rate = effective_sampling_rate(self.settings, spec_by_name(self.specs, "kong"))
        if rate <= 0:
            self._say(f"sampling rate {rate}: the canary cannot be traced; it proved only that Kong proxies")
        else:
            try:
                wait_canary_root(self.sink, trace_id, self.timeouts.canary)
            except AssertionError as exc:
                tails = "\n".join(f"--- {n} log tail ---\n{self._log_tail(n)}" for n in ("collector", "kong"))
                raise StackStartError(redact(f"the canary's Kong span did not reach the sink: {exc}\n{tails}",
                                             self._token)) from None
            self.canary_trace_id = trace_id
            self.canary_services = canary_services(self.sink, trace_id, self.timeouts.canary_services)
        self.sink.reset()  # the suites start from an empty sink; the canary proved the pipeline carries data

    # --- the Stack protocol --------------------------------------------------------------------------------------

    @property
    def sink(self) -> SinkClient:
        if self._sink is None:
            raise RuntimeError("the sink is not running (the docker stack was not started)")
        return self._sink

    def reconfigure(self, **changes: Any) -> None:
        """Apply changed settings and wait until they are in effect.

        Kong-side (``sampling_rate``, ``kong_plugin_config``): the config is re-derived from kong.yaml and POSTed to
        Kong's Admin API ``/config``; done when Kong's worker logs that the reload was applied.
        ``tracing_sampling_rate`` is kong.conf: Kong's container is replaced (same alias, same host ports).
        Collector-side: the collector container is replaced with the re-derived config (or stays away when
        ``collector_running`` is False).
        """
        new = self.settings.with_changes(**changes)
        changed = self.settings.differs_in(new)
        if not changed:
            return
        previous, previous_specs = self.settings, self.specs
        self.settings, self.specs = new, container_specs(new, sink_image_ref=self.sink_image)
        try:
            if changed & COLLECTOR_SIDE:
                self._replace("collector", run=self.settings.collector_running)
            if changed & KONG_RESTART:
                self._replace("kong", run=True)
            elif changed & KONG_SIDE:
                self._post_kong_config()
        except BaseException:
            self.settings, self.specs = previous, previous_specs
            raise

    def _post_kong_config(self) -> None:
        item = spec_by_name(self.specs, "kong").file(KONG_DECLARATIVE_PATH)
        (self.workdir / "config" / item.host_name).write_text(item.content)
        kong = self.running["kong"]
        evidence = ReloadEvidence.of(self._kong_error_log())
        admin = self._url(kong, KONG_ADMIN_PORT)
        response = httpx.post(f"{admin}/config", json={"config": item.content}, timeout=self.timeouts.reconfigure)
        if response.status_code != 201:
            raise StackStartError(f"Kong refused the new declarative config: POST /config answered "
                                   f"{response.status_code}: {response.text[:2000]}")
        workers = worker_count(spec_by_name(self.specs, "kong").env)
        try:
            poll_until(lambda: evidence.workers_applied(self._kong_error_log()), lambda done: done >= workers,
                       what=f"Kong to log '{RECONFIGURE_DONE}' on all {workers} worker(s) after POST /config",
                       timeout=self.timeouts.reconfigure, retry_on=())
        except KongReloadFailed as exc:
            raise StackStartError(f"{exc}\n--- kong log tail ---\n{self._log_tail('kong')}") from None

    def _kong_error_log(self) -> str:
        """Kong's error log (stderr; access lines go to stdout and would only make every poll bigger)."""
        raw: bytes = self.running["kong"].container.get_wrapped_container().logs(stdout=False, stderr=True)
        return raw.decode(errors="replace")

    def _replace(self, name: str, *, run: bool) -> None:
        """Remove a container (its log saved first) and, if ``run``, start its successor and wait until it serves."""
        old = self.running.get(name)
        host_ports: dict[int, int] = {}
        if old is not None:
            if self._started(old):
                host_ports = {p.port: int(old.container.get_exposed_port(p.port)) for p in old.spec.ports
                              if p.published and self._state(old).get("Running")}
                self._save_log(name, old)
                old.container.stop()
            del self.running[name]
        if run:
            self._launch(spec_by_name(self.specs, name), self._generations.get(name, 0), host_ports)
            self._wait_serving(name)
            if name == "kong":
                self.gateway_url = self._url(self.running["kong"], KONG_PROXY_PORT)

    def collector_pid(self) -> int | None:
        """The collector's pid when this machine can see it (a local Linux daemon: the container's process is a
        host process), else None. With Docker Desktop or a remote daemon the pid lives in another kernel; then
        its ``URL_COLLECTOR_METRICS`` in :meth:`urls` is the way to watch the collector."""
        running = self.running.get("collector")
        if running is None:
            return None
        try:
            state = self._state(running)
        except Exception:
            return None
        pid = int(state.get("Pid") or 0) if state.get("Running") else 0
        if pid <= 0 or self.publish_ip != LOOPBACK:
            return None
        try:  # the same pid may belong to something else on this host when the daemon runs in a VM
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        return pid if command.startswith("otelcol") else None

    def collector_state(self) -> str:
        """``running``, ``stopped (reconfigured away)`` or the container's status, for status lines."""
        running = self.running.get("collector")
        if running is None:
            return "stopped (collector_running=False)"
        try:
            return str(self._state(running).get("Status") or "unknown")
        except Exception as exc:
            return f"unknown ({type(exc).__name__})"

    def urls(self) -> dict[str, str]:
        """Every published port's URL on the host, by what a person (or otelgate.probe) looks for."""
        urls: dict[str, str] = {}
        labels = {("kong", KONG_PROXY_PORT): "gateway (Kong proxy)", ("kong", KONG_ADMIN_PORT): "kong admin API",
                  ("kong", KONG_STATUS_PORT): "kong status API (/status, /metrics)", ("sink", SINK_PORT): "sink API"}
        for name, running in self.running.items():
            for port in running.spec.ports:
                if not port.published:
                    continue
                with contextlib.suppress(Exception):  # a container without its port mapping (yet) has no URL
                    url = self._url(running, port.port)
                    if name == "collector" and port.purpose == COLLECTOR_TELEMETRY:
                        urls[URL_COLLECTOR_METRICS] = url + "/metrics"
                    elif name == "collector" and port.port == running.spec.wait.port:
                        urls[URL_COLLECTOR_HEALTH] = url + running.spec.wait.path
                    else:
                        urls[labels.get((name, port.port), f"{name} {port.purpose}")] = url
        return urls

    # --- teardown and diagnostics --------------------------------------------------------------------------------

    def close(self, force: bool = False) -> None:
        """Remove every container and the network, unless kept (``keep=True``, and not a failed bring-up)."""
        if self._closed:
            return
        self._closed = True
        if self.keep and not force:
            self._say(self.kept_message())
            return
        errors: list[str] = []
        for name in reversed(list(self.running)):
            try:
                self.running[name].container.stop()
            except Exception as exc:
                errors.append(f"{name}: {exc!r}")
        self.running.clear()
        if self._network_created:
            try:
                self.network.remove()
            except Exception as exc:
                errors.append(f"network {self.network.name}: {exc!r}")
        if self._sink is not None:
            self._sink.close()
        if errors:
            raise RuntimeError("docker stack teardown was incomplete:\n" + "\n".join(errors))

    def kept_message(self) -> str:
        names = ", ".join(self._container_name(r.spec, r.generation) for r in self.running.values())
        network = self.network.name if self.network is not None else "(none)"
        return (f"kept (--keep): containers {names}; network {network}. Remove them with: docker rm -f "
                f"$(docker ps -aq --filter label={LABEL_RUN}={self.run_id}) && docker network rm {network}")

    def _log_tail(self, name: str, lines: int = 60) -> str:
        running = self.running.get(name)
        if running is None or not self._started(running):
            return f"<{name} not started>"
        try:
            stdout, stderr = running.container.get_logs()
        except Exception as exc:
            return f"<logs of {name} unavailable: {exc!r}>"
        text = (stdout + stderr).decode(errors="replace")
        return redact("\n".join(text.splitlines()[-lines:]), self._token)

    def _save_log(self, name: str, running: _Running) -> Path:
        """The container's whole log (stdout and stderr interleaved, timestamped), token redacted."""
        path = self.workdir / "logs" / f"{self._container_name(running.spec, running.generation)}.log"
        try:
            raw = running.container.get_wrapped_container().logs(stdout=True, stderr=True, timestamps=True)
            path.write_text(redact(raw.decode(errors="replace"), self._token))
        except Exception as exc:
            path.write_text(f"<logs of {name} unavailable: {exc!r}>\n")
        return path

    def diagnose(self, dest: Path) -> Path:
        """Every container's log and state, the derived configs, the sink dump and a summary; token redacted."""
        dest = Path(dest)
        (dest / "logs").mkdir(parents=True, exist_ok=True)
        for name, running in self.running.items():
            if self._started(running):
                self._save_log(name, running)
        for path in sorted((self.workdir / "logs").glob("*.log")):
            (dest / "logs" / path.name).write_text(redact(path.read_text(errors="replace"), self._token))
        (dest / "config").mkdir(exist_ok=True)
        for path in sorted((self.workdir / "config").glob("*")):
            (dest / "config" / path.name).write_text(redact(path.read_text(errors="replace"), self._token))
        (dest / "containers.json").write_text(redact(json.dumps(self._inspect_all(), indent=1), self._token))
        write_sink_dump(dest, lambda: self.sink, self._token)
        (dest / "summary.txt").write_text(redact(self._summary(), self._token))
        return dest

    def _inspect_all(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, running in self.running.items():
            try:
                attrs = running.container.get_wrapped_container().attrs
                out[name] = {"name": attrs.get("Name"), "image": running.spec.image, "state": attrs.get("State"),
                             "ports": (attrs.get("NetworkSettings") or {}).get("Ports"),
                             "env_names": sorted(e.split("=", 1)[0] for e in (attrs.get("Config") or {}).get("Env")
                                                 or [])}
            except Exception as exc:
                out[name] = {"error": repr(exc)}
        return out

    def _summary(self) -> str:
        lines = [f"otelgate docker stack (run {self.run_id}, workdir {self.workdir})", f"settings: {self.settings}",
                 f"kong deployment name (collector attribute): {self.kong_deployment_name}",
                 f"canary trace: {self.canary_trace_id} ({self.canary_services or 'not traced'})"]
        if self.bring_up_seconds is not None:
            lines.append(f"bring-up to first green canary: {self.bring_up_seconds:.2f} s")
        lines.append("containers:")
        for name, running in self.running.items():
            lines.append(f"  {name}: {self._container_name(running.spec, running.generation)} ({running.spec.image})")
        lines += summary_tail(self.urls(), lambda: self.sink.stats())
        return "\n".join(lines) + "\n"

    def _timing(self, line: str) -> None:
        append_timing(self.workdir, line)

