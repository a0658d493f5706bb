"""Reaching a Docker daemon: the ``/_ping`` check behind ``--check-prerequisites`` and the bring-up, and the few
testcontainers names the stack uses (an optional extra, imported only when a stack starts)."""

from __future__ import annotations

import os

import httpx

from otelgate.stacks.base import StackStartError


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def ping_daemon() -> str | None:
    """None if a Docker daemon answers ``/_ping``; else why not."""
    host = docker_host()
    try:
        import docker
    except ImportError:
        docker = None
    if docker is not None:
        try:
            client = docker.from_env(timeout=10)
            try:
                client.ping()
            finally:
                client.close()
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    # without the docker SDK: the Engine API's /_ping over the socket or plain TCP
    try:
        if host.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=host[len("unix://"):])
            response = httpx.Client(transport=transport, timeout=5.0).get("http://docker/_ping")
        elif host.startswith("tcp://"):
            response = httpx.get(f"http://{host[len('tcp://'):]}/_ping", timeout=5.0)
        else:
            return f"cannot check DOCKER_HOST={host} without the docker SDK"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.status_code == 200 else f"/_ping answered HTTP {response.status_code}"


def daemon_problem() -> str | None:
    """None if a Docker daemon answers; else a message that says where it looked and what to do."""
    why = ping_daemon()
    if why is None:
        return None
    return (f"no reachable Docker daemon at {docker_host()} ({why}). Start Docker (Docker Desktop, or "
            "`sudo systemctl start docker`), or point DOCKER_HOST at a running daemon; `docker info` must work. "
            "With a non-default `docker context` (Docker Desktop on Linux, Colima, Rancher Desktop, Podman): "
            "export DOCKER_HOST=$(docker context inspect --format '{{.Endpoints.docker.Host}}')")


class Testcontainers:
    """The few testcontainers names the stack uses, imported only when a stack starts (an optional extra)."""

    def __init__(self) -> None:
        try:
            from testcontainers.core.config import testcontainers_config
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.network import Network
        except ImportError as exc:
            raise StackStartError(f"the docker stack needs testcontainers: pip install 'otelgate[docker]' ({exc})") \
                from None
        self.config = testcontainers_config
        self.DockerContainer = DockerContainer
        self.Network = Network


def testcontainers() -> Testcontainers:
    return Testcontainers()
