"""A command that needs an optional extra says which one, in one line, and exits non-zero — no traceback.

The extra's module is made unimportable in a child process (``sys.modules[name] = None``: the import raises
ModuleNotFoundError, as on a machine without it), which runs the real command."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from otelgate import extras, paths

EXIT_MISSING_EXTRA = 3


def run_without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    program = f"import sys\nsys.modules[{module!r}] = None\n{code}"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          cwd=paths.CHECKOUT, check=False)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_lint_without_kubernetes_validate_names_the_kube_extra() -> None:
    done = run_without("kubernetes_validate", "from otelgate.cli import main\nsys.exit(main(['lint']))")
    assert done.returncode == EXIT_MISSING_EXTRA
    assert one_line(done) == ("otelgate lint: needs kubernetes-validate, from otelgate's optional extra 'kube': "
                              "pip install 'otelgate[kube]'")


def test_the_load_sweep_without_locust_names_the_load_extra() -> None:
    done = run_without("locust", "from loadtests.sweep import main\nsys.exit(main([]))")
    assert done.returncode == EXIT_MISSING_EXTRA
    assert one_line(done).endswith("pip install 'otelgate[load]'")


def test_the_docker_stack_without_testcontainers_names_the_docker_extra() -> None:
    code = ("from otelgate.stacks.docker.daemon import testcontainers\n"
            "from otelgate.stacks.base import StackStartError\n"
            "try:\n    testcontainers()\nexcept StackStartError as exc:\n    print(exc, file=sys.stderr)\n"
            "    sys.exit(3)\n")
    done = run_without("testcontainers", code)
    assert done.returncode == EXIT_MISSING_EXTRA
    assert "pip install 'otelgate[docker]'" in one_line(done)


def test_an_unrelated_missing_module_is_not_blamed_on_an_extra() -> None:
    assert extras.hint(ModuleNotFoundError(name="no_such_module_here")) is None
    done = run_without("otelgate.lint.resources", "from otelgate.cli import main\nsys.exit(main(['lint']))")
    assert done.returncode != 0 and "Traceback" in done.stderr  # a real bug stays loud


@pytest.mark.parametrize(("module", "extra"), [
    ("kubernetes_validate", "kube"), ("testcontainers.core.container", "docker"), ("locust", "load"),
    ("matplotlib.pyplot", "load"),
])
def test_the_extra_is_read_from_the_installed_metadata(module: str, extra: str) -> None:
    provided = extras.extra_providing(module)
    assert provided is not None and provided[1] == extra


def test_the_installed_metadata_matches_pyproject() -> None:
    """The hints read the installed metadata: a stale install would hint at extras pyproject no longer has."""
    assert paths.CHECKOUT is not None
    declared = tomllib.loads((paths.CHECKOUT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, requirements in declared.items():
        for requirement in requirements:
            name = requirement.split(";")[0].split("[")[0]
            for op in "<>=!~ ":
                name = name.split(op)[0]
            provided = extras.extra_providing(name.replace("-", "_"))
            assert provided is not None and provided[1] == extra, (extra, requirement, provided)
