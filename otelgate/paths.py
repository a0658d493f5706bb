"""Where otelgate's files are: the one module that knows.

The demo deployment — ``manifests/`` (everything applied to a cluster, the topology file ``otelgate.toml``) and the
collector distribution manifest ``collector/builder-config.yaml`` — ships inside the package as ``otelgate.bundled``
(pyproject.toml maps the repository's root folders ``manifests/`` and ``collector/`` onto it when building a
wheel). In a checkout (an editable install, or ``pythonpath = .``) the same files are the repository's own root
folders, which is where this module finds them: no copy to drift.

A team points otelgate at its own deployment with ``--manifests DIR`` (commands) or ``--otelgate-manifests DIR``
(the pytest plugin); both set :data:`MANIFESTS_ENV` so that child processes see the same folder.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

MANIFESTS_ENV = "OTELGATE_MANIFESTS"


def _bundle_root() -> Path:
    """The folder holding the default ``manifests/`` and ``collector/``: ``otelgate/bundled`` in an installed wheel,
    the repository root in a checkout."""
    bundled = Path(str(files("otelgate.bundled")))
    if (bundled / "manifests").is_dir():
        return bundled
    checkout = bundled.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "manifests").is_dir():
        return checkout
    raise RuntimeError(f"otelgate's bundled manifests are missing: neither {bundled / 'manifests'} (installed "
                       f"package) nor {checkout / 'manifests'} (checkout) exists; reinstall otelgate")


BUNDLE_ROOT: Path = _bundle_root()
# The repository root when otelgate runs from a checkout (suites/, Dockerfile, loadtests/ live there); None when it
# runs from an installed wheel.
CHECKOUT: Path | None = BUNDLE_ROOT if (BUNDLE_ROOT / "pyproject.toml").is_file() else None
DEFAULT_MANIFESTS: Path = BUNDLE_ROOT / "manifests"
TOPOLOGY_FILE = "otelgate.toml"


def manifests_dir(override: str | Path | None = None) -> Path:
    """The manifests folder in force: ``override``, else ``$OTELGATE_MANIFESTS``, else the bundled demo's."""
    chosen = override or os.environ.get(MANIFESTS_ENV) or DEFAULT_MANIFESTS
    return Path(chosen).resolve()


def manifest(relative: str, root: str | Path | None = None) -> Path:
    """One file of the manifests folder in force (``relative`` like ``kong/kong.yaml``)."""
    return manifests_dir(root) / relative


def collector_manifest() -> Path:
    """The collector distribution manifest (OpenTelemetry Collector Builder config) otelgate builds by default."""
    return BUNDLE_ROOT / "collector" / "builder-config.yaml"


class ManifestsError(ValueError):
    """A manifests folder given on the command line that cannot be used."""


def use_manifests(folder: str | Path | None) -> str | None:
    """Make ``folder`` the manifests folder in force for this process and its children (None: the default again);
    refuse a missing folder. Returns the previous setting, for :func:`use_manifests` to restore."""
    previous = os.environ.get(MANIFESTS_ENV)
    if folder is None:
        os.environ.pop(MANIFESTS_ENV, None)
        return previous
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise ManifestsError(f"{folder}: not a folder")
    os.environ[MANIFESTS_ENV] = str(path)
    return previous
