"""Find or build otelgate's collector distribution (``collector/builder-config.yaml``).

Lookup order: ``OTELGATE_COLLECTOR``, the build cache ``~/.cache/otelgate/collector/<manifest-hash>/``, then
``otelcol-contrib`` on PATH. ``build()`` runs the OpenTelemetry Collector Builder (installed with ``go install`` when
missing) in two phases, generate + module download and compile, so the README can report both; a changed manifest
gets a new cache folder, an unchanged one is never rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from otelgate import paths
from otelgate.buildrun import BuildCommandError, exclusive, run_followed

Progress = Callable[[str], None]

DEFAULT_MANIFEST = paths.collector_manifest()
CONTRIB_ON_PATH = "otelcol-contrib"
CORE_MODULE_PREFIX = "go.opentelemetry.io/collector/"
BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
BUILD_TIMEOUT_S = 45 * 60.0  # a cold build on 2 cores with module download; far above the measured time
METADATA_FILE = "build.json"

HOW_TO_GET_ONE = (
    "How to get one:\n"
    "  - install Go (https://go.dev/dl/) and run `nox -s collector` (or `otelgate collector --build`); or\n"
    "  - point OTELGATE_COLLECTOR at a collector binary that has the components of collector/builder-config.yaml; or\n"
    "  - put the contrib distribution `otelcol-contrib` on PATH "
    "(https://github.com/open-telemetry/opentelemetry-collector-releases/releases)."
)


class CollectorNotFound(RuntimeError):
    """No collector binary and no way to build one here; the message says how to get one."""


class CollectorBuildError(RuntimeError):
    """The builder or the Go toolchain failed; the message carries the tail of their output."""


@dataclass(frozen=True)
class BuildResult:
    path: Path
    seconds: float  # time of the build that produced the binary (also when it came from the cache)
    size_bytes: int
    cached: bool
    phases: dict[str, float] | None = None  # seconds per phase of that build

    def summary(self) -> str:
        origin = "cached build" if self.cached else "built"
        phases = ""
        if self.phases:
            phases = " (" + ", ".join(f"{name} {secs:.1f}s" for name, secs in self.phases.items()) + ")"
        return (f"{origin}: {self.path}\n  build time {self.seconds:.1f}s{phases}\n"
                f"  binary size {self.size_bytes / 1_000_000:.1f} MB ({self.size_bytes} bytes)")


# ---------------------------------------------------------------------------------------------------- manifest
def manifest_hash(manifest: Path = DEFAULT_MANIFEST) -> str:
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


def load_manifest(manifest: Path = DEFAULT_MANIFEST) -> dict[str, Any]:
    doc = yaml.safe_load(manifest.read_text())
    if not isinstance(doc, dict) or "dist" not in doc:
        raise ValueError(f"{manifest} is not an OpenTelemetry Collector Builder manifest (no `dist` section)")
    return doc


def manifest_gomods(doc: dict[str, Any], kinds: Sequence[str] = ("receivers", "processors", "exporters",
                                                                   "extensions", "connectors")) -> list[str]:
    """The ``gomod`` lines ("<module> <version>") of the manifest's components."""
    return [str(entry["gomod"]) for kind in kinds for entry in doc.get(kind) or []]


def builder_version(doc: dict[str, Any]) -> str:
    """The builder release matching the manifest: the version of its core (go.opentelemetry.io/collector) modules."""
    versions = {gomod.split()[1] for gomod in manifest_gomods(doc) if gomod.startswith(CORE_MODULE_PREFIX)}
    if len(versions) != 1:
        raise ValueError(f"the manifest's core components must share one version to pick the builder; saw {versions}")
    return versions.pop()


def distribution_name(doc: dict[str, Any]) -> str:
    return str(doc["dist"]["name"])


# ---------------------------------------------------------------------------------------------------- cache
def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "otelgate" / "collector"


def cache_dir(manifest: Path = DEFAULT_MANIFEST) -> Path:
    return cache_root() / manifest_hash(manifest)


def cached_binary(manifest: Path = DEFAULT_MANIFEST) -> Path | None:
    binary = cache_dir(manifest) / distribution_name(load_manifest(manifest))
    return binary if _is_executable(binary) else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# ---------------------------------------------------------------------------------------------------- lookup
def find_collector(build_if_missing: bool = False, manifest: Path = DEFAULT_MANIFEST,
                   progress: Progress = print) -> Path:
    """The collector binary to run: ``OTELGATE_COLLECTOR``, the cache, ``otelcol-contrib`` on PATH, or a build."""
    explicit = os.environ.get("OTELGATE_COLLECTOR")
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_executable(path):
            raise CollectorNotFound(f"OTELGATE_COLLECTOR={explicit} is not an executable file.\n{HOW_TO_GET_ONE}")
        return path
    cached = cached_binary(manifest)
    if cached is not None:
        return cached
    on_path = shutil.which(CONTRIB_ON_PATH)
    if on_path:
        return Path(on_path)
    if build_if_missing and find_go() is not None:
        return build(progress=progress, manifest=manifest).path
    reason = "Go is not installed" if find_go() is None else "it was not built yet"
    raise CollectorNotFound(
        f"no OpenTelemetry Collector binary found ({reason}): OTELGATE_COLLECTOR is unset, "
        f"{cache_dir(manifest)} holds no build of {manifest.name}, and {CONTRIB_ON_PATH} is not on PATH.\n"
        f"{HOW_TO_GET_ONE}"
    )


def find_go() -> Path | None:
    on_path = shutil.which("go")
    if on_path:
        return Path(on_path)
    for candidate in (Path("/usr/local/go/bin/go"), Path.home() / "go" / "bin" / "go", Path("/usr/lib/go/bin/go")):
        if _is_executable(candidate):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------- build
def build(progress: Progress = print, manifest: Path = DEFAULT_MANIFEST, force: bool = False) -> BuildResult:
    """Build the distribution into the cache unless an identical manifest was built before."""
    doc = load_manifest(manifest)
    target_dir = cache_dir(manifest)
    binary = target_dir / distribution_name(doc)
    target_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(target_dir / ".lock"):  # two sessions never build the same manifest at once
        if _is_executable(binary) and not force:
            return _result_from_cache(binary)
        go = find_go()
        if go is None:
            raise CollectorNotFound(f"cannot build the collector: Go is not installed.\n{HOW_TO_GET_ONE}")
        return _build_locked(doc, manifest, target_dir, binary, go, progress)


def _build_locked(doc: dict[str, Any], manifest: Path, target_dir: Path, binary: Path, go: Path,
                  progress: Progress) -> BuildResult:
    started = time.monotonic()
    env = _go_env(go)
    progress(f"[collector] building {distribution_name(doc)} from {manifest} (hash {manifest_hash(manifest)}) "
             f"with {_go_version(go, env)}")
    builder = ensure_builder(builder_version(doc), go, env, progress)
    src = target_dir / "src"
    build_manifest = _write_build_manifest(doc, target_dir, src)
    phases: dict[str, float] = {}
    for phase, flags in (("generate+modules", ["--skip-compilation"]),
                         ("compile", ["--skip-generate", "--skip-get-modules"])):
        phase_start = time.monotonic()
        progress(f"[collector] phase {phase} ...")
        _run_streaming([str(builder), f"--config={build_manifest}", *flags], env=env, cwd=target_dir,
                       progress=progress, started=started, what=f"collector build phase {phase}")
        phases[phase] = round(time.monotonic() - phase_start, 1)
        progress(f"[collector] phase {phase} done in {phases[phase]:.1f}s")
    produced = src / distribution_name(doc)
    if not _is_executable(produced):
        raise CollectorBuildError(f"the builder finished but {produced} does not exist")
    os.replace(produced, binary)  # the binary appears in the cache only when complete
    seconds = round(time.monotonic() - started, 1)
    metadata = {"manifest_hash": manifest_hash(manifest), "seconds": seconds, "phases": phases,
                "size_bytes": binary.stat().st_size, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "go": _go_version(go, env), "builder": builder_version(doc)}
    (target_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    result = BuildResult(binary, seconds, binary.stat().st_size, cached=False, phases=phases)
    progress(f"[collector] {result.summary()}")
    return result


def _result_from_cache(binary: Path) -> BuildResult:
    metadata: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        metadata = json.loads((binary.parent / METADATA_FILE).read_text())
    return BuildResult(binary, float(metadata.get("seconds", 0.0)), binary.stat().st_size, cached=True,
                       phases=metadata.get("phases"))


def _write_build_manifest(doc: dict[str, Any], target_dir: Path, src: Path) -> Path:
    """A copy of the manifest whose output path is the cache folder (the original's ./_build is cwd-relative)."""
    derived = json.loads(json.dumps(doc))
    derived["dist"]["output_path"] = str(src)
    path = target_dir / "builder-config.yaml"
    path.write_text("# generated from collector/builder-config.yaml; only dist.output_path differs\n"
                    + yaml.safe_dump(derived, sort_keys=False))
    return path


def ensure_builder(version: str, go: Path, env: dict[str, str], progress: Progress) -> Path:
    """The builder at ``version``: reuse an installed one that reports it, else ``go install`` it into the cache."""
    gopath = Path(subprocess.run([str(go), "env", "GOPATH"], env=env, capture_output=True, text=True,
                                 timeout=60, check=True).stdout.strip() or Path.home() / "go")
    tools = cache_root() / "tools" / f"builder-{version}"
    for candidate in (tools / "builder", gopath / "bin" / "builder"):
        if _is_executable(candidate) and _builder_reports(candidate, version):
            return candidate
    progress(f"[collector] installing the builder: go install {BUILDER_MODULE}@{version}")
    tools.mkdir(parents=True, exist_ok=True)
    _run_streaming([str(go), "install", f"{BUILDER_MODULE}@{version}"], env={**env, "GOBIN": str(tools)},
                   cwd=tools, progress=progress, started=time.monotonic(), what="go install of the builder")
    return tools / "builder"


def _builder_reports(builder: Path, version: str) -> bool:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([str(builder), "version"], capture_output=True, text=True, timeout=30)
        return re.search(rf"\b{re.escape(version)}\b", out.stdout + out.stderr) is not None
    return False


def _go_env(go: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{go.parent}{os.pathsep}{env.get('PATH', '')}"  # the builder looks for `go` on PATH
    return env


def _go_version(go: Path, env: dict[str, str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([str(go), "version"], env=env, capture_output=True, text=True,
                              timeout=60).stdout.strip()
    return "go (version unknown)"


def _run_streaming(argv: list[str], *, env: dict[str, str], cwd: Path, progress: Progress, started: float,
                   what: str, timeout: float = BUILD_TIMEOUT_S) -> None:
    """Run ``argv``, echo each output line with the elapsed time, a heartbeat while it is quiet, bounded."""
    try:
        run_followed(argv, cwd=cwd, env=env, progress=progress, label="collector", what=what, timeout=timeout,
                     started=started)
    except BuildCommandError as exc:
        raise CollectorBuildError(str(exc)) from exc
