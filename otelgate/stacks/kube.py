"""otelgate's own runner for kubectl / helm / docker / kind commands, its supervised ``kubectl port-forward`` and the
ownership checks of the cluster stacks.

Why not pytest-kubernetes for these (it manages the kind cluster itself, see :mod:`otelgate.stacks.kind`): its
``kubectl`` and ``apply`` build one shell string (``shell=True``; ``apply(dict)`` pipes ``echo '<yaml>'``, so a quote
in a manifest breaks it), it has no token redaction, and its port-forward is not re-established when the pod behind
it goes away. Here every command is an argv list with a timeout, stdin carries rendered manifests (the token never
appears in argv), and everything reported is redacted.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otelgate.cluster_topology import OWNER_LABEL, OWNER_LABEL_KEY, OWNER_LABEL_VALUE
from otelgate.procs import ManagedProcess, free_port, port_is_open
from otelgate.redact import REDACTED, redact

__all__ = ["REDACTED", "CommandFailed", "PortForward", "Runner", "Step", "ownership_problems"]


@dataclass(frozen=True)
class Step:
    """One command of a bring-up or teardown, as a person would type it.

    ``stdin_from`` names the manifest whose *rendered* text (token or image substituted) goes to stdin; the rendered
    text itself never appears in :meth:`render`, so a plan can be printed without leaking the token.
    """

    addon: str
    argv: tuple[str, ...]
    manifest: str | None = None
    timeout: float = 120.0
    stdin_from: str | None = None
    note: str = ""
    render_stdin: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    def render(self) -> str:
        line = shlex.join(self.argv)
        if self.stdin_from:
            line += f" < {self.stdin_from}"
        if self.note:
            line += f"    # {self.note}"
        return line


class CommandFailed(RuntimeError):
    pass


@dataclass
class Runner:
    """Runs kind/helm/kubectl/docker with a timeout each; redacts the token from everything it reports."""

    kubeconfig: Path | None = None
    secrets: tuple[str, ...] = ()
    cwd: Path | None = None

    def redact(self, text: str) -> str:
        return redact(text, *self.secrets)

    def with_kubeconfig(self, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        if self.kubeconfig is not None and argv and argv[0] in ("kubectl", "helm"):
            argv[1:1] = ["--kubeconfig", str(self.kubeconfig)]
        return argv

    def run(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        full = self.with_kubeconfig(argv)
        try:
            result = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout,
                                    cwd=self.cwd, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"timed out after {timeout:.0f}s: {self.redact(shlex.join(full))}\n"
                                f"{self.redact(_text(exc.stdout))[-2000:]}{self.redact(_text(exc.stderr))[-2000:]}"
                                ) from None
        except FileNotFoundError as exc:
            raise CommandFailed(f"{full[0]} is not installed or not on PATH ({exc}); "
                                f"`otelgate up --stack kind --check-prerequisites` says how to install it") from None
        if check and result.returncode != 0:
            raise CommandFailed(f"exit {result.returncode}: {self.redact(shlex.join(full))}\n"
                                f"{self.redact(result.stderr or result.stdout)[-4000:]}")
        return result

    def run_step(self, step: Step) -> subprocess.CompletedProcess[str]:
        stdin = step.render_stdin() if step.render_stdin is not None else None
        return self.run(step.argv, timeout=step.timeout, stdin=stdin)

    def json(self, argv: Sequence[str], timeout: float = 30.0) -> Any:
        return json.loads(self.run([*argv, "-o", "json"], timeout=timeout).stdout or "{}")

    def ok(self, argv: Sequence[str], timeout: float = 30.0, stdin: str | None = None) -> bool:
        try:
            return self.run(argv, timeout=timeout, stdin=stdin, check=False).returncode == 0
        except CommandFailed:
            return False


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- a port-forward that outlives the pod behind it -------------------------------------------------------------------

PORT_FORWARD_TIMEOUT = 30.0


class PortForward:
    """``kubectl port-forward service/<name>`` on one fixed local port, re-established whenever it ends.

    kubectl resolves a Service to ONE pod when the forward starts and never follows it: when that pod goes (a Kong
    rollout after ``helm upgrade``), the forward ends or keeps a dead tunnel. So a watchdog thread restarts the
    process when it exits, and :meth:`restart` starts a fresh one after every rollout; the URL stays the same.
    """

    def __init__(self, runner: Runner, name: str, namespace: str, service: str, remote_port: int, log_dir: Path,
                 *, check_interval: float = 0.5, say: Callable[[str], None] = print) -> None:
        self.runner, self.name, self.namespace, self.service = runner, name, namespace, service
        self.remote_port = remote_port
        self.local_port = free_port()
        self.log_path = log_dir / f"port-forward-{name}.log"
        self.check_interval = check_interval
        self.say = say
        self.restarts = 0
        self._proc: ManagedProcess | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def argv(self) -> list[str]:
        return self.runner.with_kubeconfig(["kubectl", "port-forward", "-n", self.namespace, f"service/{self.service}",
                                            f"{self.local_port}:{self.remote_port}", "--address", "127.0.0.1"])

    def start(self) -> str:
        with self._lock:
            self._launch()
        self._watchdog = threading.Thread(target=self._watch, name=f"port-forward-{self.name}", daemon=True)
        self._watchdog.start()
        return self.url

    def restart(self, reason: str) -> None:
        """Stop the current forward and start one on the same port (after a rollout replaced the pod)."""
        with self._lock:
            if self._proc is not None:
                self._proc.stop()
            self._launch()
            self.restarts += 1
            self.say(f"port-forward {self.name}: re-established on {self.url} ({reason})")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._proc is not None:
                self._proc.stop()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5.0)

    def _launch(self) -> None:
        self._proc = ManagedProcess(f"port-forward-{self.name}", self.argv(), self.log_path).start()
        self._proc.wait_ready(lambda: port_is_open("127.0.0.1", self.local_port),
                              what=f"port-forward to {self.namespace}/{self.service} on {self.url}",
                              timeout=PORT_FORWARD_TIMEOUT)

    def _watch(self) -> None:
        while not self._stopping.wait(self.check_interval):
            with self._lock:
                if self._stopping.is_set() or self.alive():
                    continue
                try:
                    self.restart("the previous kubectl port-forward exited")
                except Exception as exc:  # the pod may be between rollouts; try again on the next tick
                    self.say(f"port-forward {self.name}: restart failed, retrying: {exc}")


# --- ownership on a shared cluster ------------------------------------------------------------------------------------


def ownership_problems(runner: Runner, namespaces: Iterable[str],
                       releases: Iterable[tuple[str, str]]) -> list[str]:
    """Namespaces and Helm releases of otelgate's names that exist WITHOUT its ownership label (someone else's), one
    line each. Helm stores a release as Secrets labelled ``owner=helm,name=<release>``, plus the labels given with
    ``--labels`` (helm/helm@v4.2.4 pkg/storage/driver/secrets.go:173, pkg/cmd/upgrade.go:299; since v3.13).
    ``releases`` are (name, namespace otelgate would install it in)."""
    problems = []
    for namespace in namespaces:
        result = runner.run(["kubectl", "get", "namespace", namespace, "--ignore-not-found", "-o", "json"],
                            timeout=30)
        if not result.stdout.strip():
            continue
        labels = (json.loads(result.stdout).get("metadata") or {}).get("labels") or {}
        if labels.get(OWNER_LABEL_KEY) != OWNER_LABEL_VALUE:
            problems.append(f"namespace {namespace} exists and is not otelgate's (no label {OWNER_LABEL}); "
                            f"otelgate will not install into or delete it")
    for release, namespace in releases:
        for item in _release_records(runner, release, namespace):
            meta = item.get("metadata") or {}
            if (meta.get("labels") or {}).get(OWNER_LABEL_KEY) != OWNER_LABEL_VALUE:
                problems.append(f"Helm release {release} exists in namespace {meta.get('namespace')} and is not "
                                f"otelgate's (its release record lacks the label {OWNER_LABEL}); otelgate will not "
                                f"upgrade or uninstall it")
                break
    return problems


def _release_records(runner: Runner, release: str, namespace: str) -> list[dict[str, Any]]:
    """Helm's records of ``release`` in every namespace (a same-named release elsewhere is someone else's too), or
    in ``namespace`` alone when the user may not list Secrets cluster-wide."""
    selector = f"owner=helm,name={release}"
    try:
        found = runner.json(["kubectl", "get", "secrets", "--all-namespaces", "-l", selector])
    except CommandFailed:
        found = runner.json(["kubectl", "get", "secrets", "-n", namespace, "-l", selector])
    return list(found.get("items") or [])


def owned(runner: Runner, kind: str, name: str, namespace: str | None = None) -> bool:
    """The object exists and carries otelgate's ownership label (what ``close`` may delete)."""
    argv = ["kubectl", "get", kind, name, "--ignore-not-found", "-o", "json"]
    if namespace:
        argv[2:2] = ["-n", namespace]
    try:
        text = runner.run(argv, timeout=30).stdout
    except CommandFailed:
        return False
    labels = (json.loads(text).get("metadata") or {}).get("labels") or {} if text.strip() else {}
    return labels.get(OWNER_LABEL_KEY) == OWNER_LABEL_VALUE
