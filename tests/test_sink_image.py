"""The sink image, without Docker: the Dockerfile's command is the one the Deployment runs, every file it copies
exists and survives .dockerignore, and `otelgate` started with exactly those arguments (host 127.0.0.1 and a free
port instead of 0.0.0.0:8080) serves /healthz and refuses ingest without the Secret's token."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import yaml

from otelgate.procs import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]


def dockerfile_instruction(name: str) -> list[str]:
    lines = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith(f"{name} ")]
    assert len(lines) == 1, f"one {name} expected"
    return list(json.loads(lines[0][len(name) + 1:]))


def sink_container() -> dict:
    deployment = yaml.safe_load((REPO / "manifests" / "sink" / "deployment.yaml").read_text())
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_deployment_runs_the_images_command_on_its_declared_port() -> None:
    container = sink_container()
    assert dockerfile_instruction("ENTRYPOINT") == ["otelgate"]
    assert container["args"] == dockerfile_instruction("CMD")
    args = container["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == container["ports"][0]["containerPort"]
    token_env = args[args.index("--token-env") + 1]
    assert container["env"][0]["name"] == token_env and "secretKeyRef" in container["env"][0]["valueFrom"]


def test_dockerfile_copies_exist_and_are_not_ignored() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"COPY {source}: missing"
                assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, f"{source} is .dockerignored"


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_images_command_serves(tmp_path: Path) -> None:
    args = dockerfile_instruction("CMD")
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    env = {**os.environ, "DT_API_TOKEN": "image-test-token"}
    with ManagedProcess("sink-image-cmd", [sys.executable, "-m", "otelgate", *args], tmp_path / "sink.log",
                        env=env) as proc:
        proc.wait_ready(lambda: healthy(port), what="/healthz", timeout=30)
        refused = httpx.post(f"http://127.0.0.1:{port}/api/v2/otlp/v1/traces", content=b"",
                             headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        assert refused.status_code == 401, refused.text
