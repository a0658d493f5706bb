"""`pip install otelgate` works outside a checkout: the sdist and from it the wheel are built from this repository,
the wheel is installed into a fresh virtualenv in a temporary folder, and used from a folder that is not the
checkout, with an environment that does not point back at it (no PYTHONPATH, no OTELGATE_MANIFESTS).

Dependencies come from PyPI through a wheelhouse under ~/.cache/otelgate/wheelhouse/, filled by resolving the
built wheel's own requirements (keyed by them) and installed with ``--no-index``: a dependency missing from the
wheel's metadata is missing in the venv too. The collector comes from otelgate's own cache (~/.cache/otelgate),
found by the installed package exactly as a user's would be.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from otelgate import paths
from otelgate.pytest_plugin import require_collector

pytestmark = pytest.mark.timeout(900)

# what the wheel is built from: the files setup.py and pyproject.toml read (the Dockerfile copies the same)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "otelgate", "manifests", "collector")
PIP_TIMEOUT = 600


@dataclass
class Installed:
    root: Path
    wheel: Path
    venv: Path
    project: Path
    wheelhouse: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self) -> dict[str, str]:
        """A user's shell: the venv first on PATH, nothing pointing at the checkout."""
        keep = ("HOME", "LANG", "TMPDIR", "XDG_CACHE_HOME", "OTELGATE_COLLECTOR", "CI", "OTELGATE_REQUIRE_COLLECTOR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
        return env

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run([str(a) for a in argv], cwd=self.project, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        key = " ".join(str(a) for a in argv[:3])
        key += f" #{sum(k.startswith(key) for k in self.timings) + 1}" if key in self.timings else ""
        self.timings[key] = time.monotonic() - started
        return done

    def pip_install(self, *requirements: str) -> None:
        started = time.monotonic()
        # --no-compile: Python compiles what it imports anyway; compiling every installed file up front is most of
        # an install's time here
        pip(["--python", str(self.python), "install", "--no-compile", "--no-index", "--find-links",
             str(self.wheelhouse), "--find-links", str(self.wheel.parent), *requirements])
        self.timings[f"install {' '.join(requirements)}"] = time.monotonic() - started


def pip(args: Sequence[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=PIP_TIMEOUT, check=False)
    assert done.returncode == 0, f"pip {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def wheelhouse(kind: str, requirements: Sequence[str], key_by: Sequence[str] | None = None) -> Path:
    """A folder holding wheels of ``requirements`` and their dependencies, downloaded once per ``key_by`` (default:
    the requirements themselves) and Python version."""
    key = hashlib.sha256("\n".join([sys.version, *sorted(key_by or requirements)]).encode()).hexdigest()[:16]
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "otelgate" / "wheelhouse" / \
        f"{kind}-{key}"
    if not (folder / "complete").is_file():
        pip(["download", "--dest", str(folder), *requirements])
        (folder / "complete").write_text("\n".join(requirements) + "\n")
        for stale in folder.parent.glob(f"{kind}-*"):  # an older dependency set: the cache keeps only the current one
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
    return folder


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def build_environment(requirements: Sequence[str]) -> Path:
    """A virtualenv holding exactly the build backend ``[build-system] requires`` names (what pip's isolated build
    would create), kept under the wheelhouse so each run does not reinstall setuptools."""
    house = wheelhouse("build", requirements)
    venv = house / "venv"
    if not (venv / "complete").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        pip(["--python", str(venv / "bin" / "python"), "install", "--no-index", "--find-links", str(house),
             *requirements])
        (venv / "complete").write_text("\n".join(requirements) + "\n")
    return venv / "bin" / "python"


def run_hook(python: Path, backend: str, hook: str, folder: Path, cwd: Path) -> str:
    """Call a PEP 517 hook (what pip's isolated build calls) in the build environment; the file name it returns."""
    code = f"import importlib\nprint(importlib.import_module({backend!r}).{hook}({str(folder)!r}))"
    done = subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def build_wheel(root: Path, timings: dict[str, float]) -> Path:
    """The sdist from a copy of the checkout, then the wheel from the unpacked sdist (as pip does with an sdist from
    PyPI): a file the package needs but the sdist lacks fails here."""
    assert paths.CHECKOUT is not None, "this test builds the wheel from the checkout"
    source = root / "checkout"
    for name in SOURCES:
        origin = paths.CHECKOUT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    build_system = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]
    build_requires, backend = build_system["requires"], build_system["build-backend"]
    started = time.monotonic()
    python = build_environment(build_requires)
    timings["build environment"] = time.monotonic() - started
    started = time.monotonic()
    sdist = root / "sdist" / run_hook(python, backend, "build_sdist", root / "sdist", source)
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = root / "dist" / run_hook(python, backend, "build_wheel", root / "dist", unpacked)
    timings["build sdist and wheel"] = time.monotonic() - started
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel-install")
    timings: dict[str, float] = {}
    wheel = build_wheel(root, timings)
    started = time.monotonic()
    house = wheelhouse("deps", [f"{wheel}[kube]"], key_by=requires_dist(wheel))
    timings["deps wheelhouse"] = time.monotonic() - started
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    timings["venv"] = time.monotonic() - started
    project = root / "project"
    project.mkdir()
    result = Installed(root, wheel, root / "venv", project, house, timings)
    result.pip_install("otelgate")  # without extras, as `pip install otelgate`
    yield result
    print("\nwheel install timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    shutil.rmtree(result.venv, ignore_errors=True)  # a few hundred MB; pytest keeps its last three temp folders


def test_the_wheel_holds_the_package_and_the_demo_deployment_only(installed: Installed) -> None:
    assert paths.CHECKOUT is not None
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names} == {"otelgate", f"{installed.wheel.name.split('-py3')[0]}.dist-info"}
    shipped = {p.relative_to(paths.CHECKOUT).as_posix() for p in (paths.CHECKOUT / "manifests").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    shipped.add("collector/builder-config.yaml")
    assert {f"otelgate/bundled/{name}" for name in shipped} <= names
    assert re.search(r"^\[pytest11\]\s*\notelgate = otelgate\.pytest_plugin$", entry_points, re.M), entry_points


def test_lint_names_its_extra_then_checks_the_bundled_manifests(installed: Installed) -> None:
    without = installed.run("otelgate", "lint")
    assert without.returncode == 3, without.stdout + without.stderr
    assert without.stderr.strip() == ("otelgate lint: needs kubernetes-validate, from otelgate's optional extra "
                                      "'kube': pip install 'otelgate[kube]'")
    installed.pip_install("otelgate[kube]")
    done = installed.run("otelgate", "lint", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^otelgate lint: \d+ files, 0 finding\(s\)$", done.stdout, re.M), done.stdout


def test_up_dry_run_names_only_files_that_exist_in_the_installed_package(installed: Installed) -> None:
    done = installed.run("otelgate", "up", "--stack", "local", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    named = [Path(p.rstrip(".,;:)")) for p in re.findall(r"(/[^\s,;()]+)", done.stdout) if "/" in p[1:]]
    files = [p for p in named if p.suffix in {".yaml", ".yml", ".toml"}]
    assert len(files) >= 3, done.stdout  # the collector resource, the Instrumentation, kong.yaml
    site = installed.venv.resolve()
    for path in files:
        assert path.exists(), f"`otelgate up --dry-run` names {path}, which does not exist"
        assert path.resolve().is_relative_to(site), f"{path} is not inside the installed package"


USER_TEST = '''
"""A user's project: otelgate installed from its wheel, nothing else."""

import httpx

from otelgate.expect import TraceTree, assert_service_path


def test_one_request_through_kong_is_one_trace(stack):
    response = httpx.get(f"{stack.gateway_url}/coupon/coupons", timeout=10)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-kong-request-id"]
    root = stack.sink.wait_for_spans(name="kong", attrs={"kong.request.id": request_id}, timeout=30)[0]
    tree = TraceTree(stack.sink.wait_for_trace(root["trace_id"], min_spans=8, timeout=30))
    assert_service_path(tree, ["kong-otel", "coupon", "membership"])
'''


def test_a_user_project_uses_the_stack_fixture_and_expect(installed: Installed) -> None:
    require_collector()  # the local stack runs the real collector: from ~/.cache/otelgate, as for a user
    (installed.project / "test_gateway.py").write_text(textwrap.dedent(USER_TEST))
    done = installed.run("python", "-m", "pytest", "test_gateway.py", "--stack=local", "-p", "no:cacheprovider",
                         "-q", timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert re.search(r"^1 passed", done.stdout, re.M), done.stdout
