"""The control plane as a pytest session resource; the checks themselves are in tests/test_controlplane.py."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from otelgate.controlplane import build, checks
from otelgate.controlplane.cluster import ControlPlane, start
from otelgate.controlplane.kube import Kube, KubeApiError
from otelgate.procs import port_is_open
from otelgate.waiting import poll_until

REQUIRE_ENV = "OTELGATE_REQUIRE_CONTROLPLANE"


def control_plane_or_skip(workdir: Path) -> Iterator[ControlPlane]:
    """Start the control plane for a test session; in CI (``OTELGATE_REQUIRE_CONTROLPLANE=1``) missing binaries
    fail instead of skipping. Teardown proves that no process and no port is left."""
    missing = [c.name for c in build.COMPONENTS if build.cached_binary(c) is None]
    if missing:
        message = (f"control-plane binaries not built: {', '.join(missing)}; build them with `nox -s controlplane` "
                   f"or `python -m otelgate.controlplane build` (about 8 minutes cold)")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    plane = start(workdir, progress=lambda _line: None)
    try:
        yield plane
    finally:
        pids = [p.pid for p in plane.processes]
        plane.stop()
        left = [pid for pid in pids if _pid_alive(pid)]
        open_ports = [port for port in plane.ports if port_is_open("127.0.0.1", port)]
        assert not left and not open_ports, f"control plane left processes {left} / ports {open_ports}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(kube: Kube, api_version: str, kind: str, name: str, namespace: str, *, what: str,
             timeout: float = 60.0) -> dict[str, Any]:
    def observe() -> dict[str, Any]:
        try:
            return kube.get(api_version, kind, name, namespace)
        except KubeApiError as exc:
            if exc.code == 404:
                return {}
            raise

    return poll_until(observe, bool, what=what, timeout=timeout, retry_on=(httpx.HTTPError,))


def variant(original: dict[str, Any], name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A copy of a manifest object under another name (same namespace, so its Secrets and ServiceAccount exist),
    changed by ``change``; server-managed metadata is dropped."""
    doc = copy.deepcopy(original)
    doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k in ("namespace", "labels", "annotations")}
    doc["metadata"]["name"] = name
    change(doc)
    return doc


@contextmanager
def applied_collector(kube: Kube, cr: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Apply a collector resource for one test; delete it and what the Operator made for it afterwards."""
    try:
        yield kube.apply(cr)
    finally:
        checks.delete_with_owned(kube, cr)


@contextmanager
def applied_object(kube: Kube, doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    meta = doc["metadata"]
    try:
        yield kube.apply(doc)
    finally:
        kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
