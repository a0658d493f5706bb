"""The sink's container image tag, shared by every stack that runs the sink in a container (docker, kind,
external): ``otelgate-sink:<version>-<hash of what goes into the image>``."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sink_image_tag(root: Path) -> str:
    """``otelgate-sink:<version>-<hash of what goes into the image>``: a rebuilt image always gets a new tag, so a
    kept cluster never runs a stale sink under a reused name (and nothing relies on :latest). ``root`` is the
    checkout holding the Dockerfile."""
    digest = hashlib.sha256()
    files = [root / "Dockerfile", root / "pyproject.toml",
             *sorted(p for p in (root / "otelgate").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"otelgate-sink:{_pyproject_version(root)}-{digest.hexdigest()[:12]}"


def _pyproject_version(root: Path) -> str:
    for line in (root / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "0"
