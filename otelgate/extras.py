"""Optional extras: which ``pip install 'otelgate[...]'`` brings a missing module, read from otelgate's own package
metadata (pyproject.toml's ``[project.optional-dependencies]``), so the answer is never written twice.

A command that needs an extra (``otelgate lint`` -> ``kube``, the docker stack -> ``docker``, load -> ``load``) says
so in one line instead of a traceback: :func:`hint` turns the :class:`ModuleNotFoundError` into that line.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata

EXIT_MISSING_EXTRA = 3  # exit status of a command that stopped because an optional extra is not installed
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_providing(module: str) -> tuple[str, str] | None:
    """``(distribution, extra)`` of the optional dependency whose import name is ``module`` (or its top-level
    package), e.g. ``kubernetes_validate`` -> ``("kubernetes-validate", "kube")``; None if no extra provides it."""
    wanted = _canonical(module.split(".")[0])
    try:
        requirements = metadata.requires("otelgate") or []
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return None
    for requirement in requirements:
        found = _REQUIREMENT.match(requirement)
        if found and _canonical(found[1]) == wanted:
            return found[1], found[2]
    return None


def hint(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the missing module, or None when it is not an extra's."""
    provided = extra_providing(exc.name or "")
    if provided is None:
        return None
    distribution, extra = provided
    return f"needs {distribution}, from otelgate's optional extra '{extra}': pip install 'otelgate[{extra}]'"


def missing(*modules: str) -> str | None:
    """The :func:`hint` line for the first of ``modules`` that is not installed (None when all are)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return hint(ModuleNotFoundError(name=module)) or f"needs the Python module {module}, which is not installed"
    return None
