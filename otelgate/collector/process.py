"""Run the collector binary with a config: a managed subprocess with its log captured, health-checked, stopped."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from otelgate.collector.config import dump_config, health_endpoint
from otelgate.procs import ManagedProcess

VALIDATE_TIMEOUT_S = 60.0
# the collector's own process needs nothing of ours but these; everything else is passed explicitly
_INHERITED_ENV = ("PATH", "HOME", "TMPDIR", "TZ", "LANG")
_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_DEPRECATED_ALIAS = re.compile(r'"([\w/]+)" alias is deprecated; use "([\w/]+)" instead')


def _process_env(env: Mapping[str, str] | None) -> dict[str, str]:
    base = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    return {**base, **(env or {})}


def missing_env(config: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Variables the config references as ``${env:X}`` (without a default) that ``env`` lacks.

    The collector expands an unset variable to "" (with a warning); for ``attributes/kong`` that is a start-up
    failure far from its cause, for the token a silent 401, so a local run refuses to start instead.
    """
    text = dump_config(config).replace("$$", "")
    return sorted({name for name, default in _ENV_REFERENCE.findall(text) if not default and name not in env})


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(config))
    return path


def validate(binary: Path, config: Mapping[str, Any] | Path, env: Mapping[str, str] | None = None,
             workdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``<binary> validate --config=...``; the caller checks ``returncode`` (0 = accepted) and ``stderr``."""
    if isinstance(config, Path):
        config_path = config
    else:
        folder = Path(tempfile.mkdtemp(prefix="otelgate-validate-", dir=workdir))
        config_path = write_config(config, folder / "collector.yaml")
    return subprocess.run([str(binary), "validate", f"--config={config_path}"], capture_output=True, text=True,
                          env=_process_env(env), timeout=VALIDATE_TIMEOUT_S, check=False)


def deprecated_aliases(log_text: str) -> list[tuple[str, str]]:
    """``(old, new)`` for every deprecated component name the collector warned about."""
    return _DEPRECATED_ALIAS.findall(log_text)


class CollectorProcess:
    """``CollectorProcess(binary, config, workdir, env)``: the config is written to ``workdir/collector.yaml``, the
    output goes to ``workdir/collector.log``. The process never outlives the interpreter (see ``otelgate.procs``)."""

    def __init__(self, binary: Path, config: Mapping[str, Any], workdir: Path,
                 env: Mapping[str, str] | None = None, name: str = "collector") -> None:
        self.binary = Path(binary)
        self.config = dict(config)
        self.workdir = Path(workdir)
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.health_url = health_endpoint(self.config)
        self.env = _process_env(env)
        missing = missing_env(self.config, self.env)
        if missing:
            raise ValueError(f"the collector config references unset environment variables {missing}; pass them in "
                             "env (otelgate.collector.local_env(resource, token) gives the resource's own env)")
        self._proc = ManagedProcess(name, [str(self.binary), f"--config={self.config_path}"], self.log_path,
                                    env=self.env, cwd=self.workdir)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def start(self) -> CollectorProcess:
        write_config(self.config, self.config_path)
        self._proc.start()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until the health_check extension answers 200 (all pipelines started); fails at once if the process dies."""

        def healthy() -> bool:
            try:
                return httpx.get(self.health_url, timeout=1.0).status_code == 200
            except httpx.TransportError:  # not listening yet
                return False

        self._proc.wait_ready(healthy, what=f"health check {self.health_url} to answer 200", timeout=timeout)

    def alive(self) -> bool:
        return self._proc.alive()

    def stop(self, grace: float = 10.0) -> None:
        self._proc.stop(grace=grace)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no collector log>"

    def log_tail(self, lines: int = 60) -> str:
        return self._proc.log_tail(lines)

    def __enter__(self) -> CollectorProcess:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
