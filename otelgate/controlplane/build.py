"""Build etcd, kube-apiserver and the OpenTelemetry Operator from the Go module proxy, cached by version.

Each binary is built from a small wrapper module that otelgate writes (its own code, like the collector's builder
manifest): etcd through a ``main`` that calls ``etcdmain.Main``; kube-apiserver by requiring ``k8s.io/kubernetes``
and replacing every staging module its go.mod points at ``./staging/...`` with the published ``k8s.io/*`` release;
the Operator by requiring its module and building its root package (``go install …@v0.148.0`` fails: the proxy
refuses the module's version list). The Operator's default image versions are link-time variables that its
Makefile fills from ``versions.txt``; the build does the same from the module's own ``versions.txt``.

Cache: ``~/.cache/otelgate/controlplane/<name>-<version>-<recipe hash>/<name>`` plus ``build.json`` (seconds, size).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from otelgate.buildrun import BuildCommandError, exclusive, run_followed
from otelgate.collector.build import find_go
from otelgate.controlplane import versions as v

Progress = Callable[[str], None]

BUILD_TIMEOUT_S = 80 * 60.0  # cold on 2 cores shared with other builds: kube-apiserver took 66 min wall (12 min CPU)
GO_DIRECTIVE = "1.24.0"
METADATA_FILE = "build.json"
# the Operator Makefile's OPERATOR_LDFLAGS (v0.148.0 Makefile:25-36): link-time variable <- versions.txt key
OPERATOR_VERSION_VARS = {
    "version": "operator", "otelCol": "opentelemetry-collector", "targetAllocator": "targetallocator",
    "operatorOpAMPBridge": "operator-opamp-bridge", "autoInstrumentationJava": "autoinstrumentation-java",
    "autoInstrumentationNodeJS": "autoinstrumentation-nodejs",
    "autoInstrumentationPython": "autoinstrumentation-python",
    "autoInstrumentationDotNet": "autoinstrumentation-dotnet", "autoInstrumentationGo": "autoinstrumentation-go",
    "autoInstrumentationApacheHttpd": "autoinstrumentation-apache-httpd",
    "autoInstrumentationNginx": "autoinstrumentation-nginx",
}


class ControlPlaneBuildError(RuntimeError):
    """Go is missing, the proxy refused a module, or the compiler failed; the message carries the output's tail."""


@dataclass(frozen=True)
class Component:
    name: str      # the binary's name
    module: str    # the upstream module the wrapper requires
    version: str   # its version, without the leading v
    package: str   # what `go build` builds ("." = the wrapper's own main)
    main_go: str   # wrapper source: a main package, or a tools file that keeps the built package in the module graph


ETCD = Component("etcd", v.ETCD_MODULE, v.ETCD_VERSION, ".", (
    "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\n"
    "func main() { etcdmain.Main(os.Args) }\n"))
KUBE_APISERVER = Component("kube-apiserver", v.KUBERNETES_MODULE, v.KUBERNETES_VERSION,
                           f"{v.KUBERNETES_MODULE}/cmd/kube-apiserver",
                           "//go:build tools\n\npackage tools\n\n"
                           f"import _ \"{v.KUBERNETES_MODULE}/cmd/kube-apiserver\"\n")
OPERATOR = Component("opentelemetry-operator", v.OPERATOR_MODULE, v.OPERATOR_VERSION, v.OPERATOR_MODULE,
                     f"//go:build tools\n\npackage tools\n\nimport _ \"{v.OPERATOR_MODULE}\"\n")
COMPONENTS = (ETCD, KUBE_APISERVER, OPERATOR)


@dataclass(frozen=True)
class BuildResult:
    name: str
    path: Path
    seconds: float   # the build that made the binary (also when it now comes from the cache)
    size_bytes: int
    cached: bool

    def summary(self) -> str:
        origin = "cached" if self.cached else "built"
        return (f"{self.name}: {origin} {self.path} (build {self.seconds:.1f}s, "
                f"{self.size_bytes / 1_000_000:.1f} MB)")


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "otelgate" / "controlplane"


def recipe_hash(component: Component) -> str:
    recipe = {**asdict(component), "go_directive": GO_DIRECTIVE, "flags": _build_flags(""),
              "vars": OPERATOR_VERSION_VARS if component is OPERATOR else {}}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def binary_path(component: Component) -> Path:
    return cache_root() / f"{component.name}-{component.version}-{recipe_hash(component)}" / component.name


def cached_binary(component: Component) -> Path | None:
    path = binary_path(component)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def ensure(component: Component, progress: Progress = print) -> BuildResult:
    """The cached binary, or build it now (one build per component at a time across processes)."""
    target = binary_path(component)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / ".lock"):
        if cached_binary(component):
            return _from_cache(component, target)
        return _build(component, target, progress)


def ensure_all(progress: Progress = print) -> dict[str, BuildResult]:
    return {c.name: ensure(c, progress) for c in COMPONENTS}


def module_dir(module: str, version: str, progress: Progress = print) -> Path:
    """The module's source in the Go module cache (downloaded from the proxy if missing), read-only."""
    go = _go()
    out = _run([str(go), "mod", "download", "-json", f"{module}@v{version}"], cwd=cache_root(), env=_go_env(),
               progress=progress, what=f"go mod download {module}@v{version}", capture=True)
    try:
        info = json.loads(out)
    except ValueError as exc:
        raise ControlPlaneBuildError(f"go mod download {module}@v{version} printed no JSON: {out[-400:]}") from exc
    if info.get("Error") or not info.get("Dir"):
        raise ControlPlaneBuildError(f"the Go module proxy did not serve {module}@v{version}: {info.get('Error')}")
    return Path(info["Dir"])


def wrapper_go_mod(component: Component, progress: Progress = print) -> str:
    lines = [f"module otelgate.local/{component.name}", "", f"go {GO_DIRECTIVE}", "",
             f"require {component.module} v{component.version}"]
    if component is KUBE_APISERVER:
        lines += ["", *(f"replace {m} => {m} v{v.KUBERNETES_STAGING_VERSION}"
                        for m in staging_modules(module_dir(component.module, component.version, progress)))]
    return "\n".join(lines) + "\n"


def staging_modules(kubernetes_dir: Path) -> list[str]:
    """The modules k8s.io/kubernetes' go.mod replaces with its ./staging copies (absent from a module download)."""
    text = (kubernetes_dir / "go.mod").read_text()
    found = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", text, flags=re.MULTILINE)
    if not found:
        raise ControlPlaneBuildError(f"no ./staging replace directives in {kubernetes_dir / 'go.mod'}")
    return sorted(set(found))


def operator_image_versions(operator_dir: Path) -> dict[str, str]:
    """``versions.txt`` of the Operator module: component -> default version (what its release build links in)."""
    pairs = (line.split("=", 1) for line in (operator_dir / "versions.txt").read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _build_flags(extra_ldflags: str) -> list[str]:
    return ["-trimpath", "-ldflags", f"-s -w{extra_ldflags}"]


def _operator_ldflags(progress: Progress) -> str:
    found = operator_image_versions(module_dir(OPERATOR.module, OPERATOR.version, progress))
    missing = sorted(set(OPERATOR_VERSION_VARS.values()) - set(found))
    if missing:
        raise ControlPlaneBuildError(f"versions.txt of the Operator v{OPERATOR.version} lacks {missing}")
    return "".join(f" -X {OPERATOR.module}/internal/version.{var}={found[key]}"
                   for var, key in OPERATOR_VERSION_VARS.items())


def _build(component: Component, target: Path, progress: Progress) -> BuildResult:
    started = time.monotonic()
    work = target.parent / "src"
    work.mkdir(exist_ok=True)
    (work / "go.mod").write_text(wrapper_go_mod(component, progress))
    (work / ("main.go" if component.package == "." else "tools.go")).write_text(component.main_go)
    env = _go_env()
    go = str(_go())
    progress(f"[controlplane] {component.name} v{component.version}: go mod tidy (module downloads)")
    _run([go, "mod", "tidy"], cwd=work, env=env, progress=progress, what=f"go mod tidy for {component.name}")
    extra = _operator_ldflags(progress) if component is OPERATOR else ""
    partial = target.with_suffix(".partial")
    progress(f"[controlplane] {component.name}: nice -n 10 go build {component.package}")
    _run(["nice", "-n", "10", go, "build", *_build_flags(extra), "-o", str(partial), component.package],
         cwd=work, env=env, progress=progress, what=f"go build of {component.name}")
    partial.replace(target)
    seconds = round(time.monotonic() - started, 1)
    size = target.stat().st_size
    (target.parent / METADATA_FILE).write_text(json.dumps(
        {"name": component.name, "version": component.version, "seconds": seconds, "size_bytes": size,
         "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    result = BuildResult(component.name, target, seconds, size, cached=False)
    progress(f"[controlplane] {result.summary()}")
    return result


def _from_cache(component: Component, target: Path) -> BuildResult:
    meta: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((target.parent / METADATA_FILE).read_text())
    seconds = meta.get("seconds", 0.0)
    return BuildResult(component.name, target, float(seconds) if isinstance(seconds, int | float) else 0.0,
                       target.stat().st_size, cached=True)


def _go() -> Path:
    go = find_go()
    if go is None:
        raise ControlPlaneBuildError("building the control plane needs Go (https://go.dev/dl/) on PATH")
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOFLAGS"] = "-mod=mod"
    cache_root().mkdir(parents=True, exist_ok=True)
    return env


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], progress: Progress, what: str,
         capture: bool = False, timeout: float = BUILD_TIMEOUT_S) -> str:
    """Run ``argv`` bounded; stream its output with the elapsed time and a heartbeat; with ``capture``, return its
    stdout (followed: stderr alone) and leave the exit status to the caller."""
    try:
        return run_followed(argv, cwd=cwd, env=env, progress=progress, label="controlplane", what=what,
                            timeout=timeout, capture_stdout=capture, check=not capture).stdout
    except BuildCommandError as exc:
        raise ControlPlaneBuildError(str(exc)) from exc
