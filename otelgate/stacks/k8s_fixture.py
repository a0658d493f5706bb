"""pytest-kubernetes' ``k8s`` fixture, bound to the cluster of a running kind or external stack.

With ``--stack kind|external`` the otelgate pytest plugin registers :class:`K8sFixturePlugin`; a user's test then asks
for ``k8s`` and gets pytest-kubernetes' cluster manager for otelgate's cluster (``k8s.kubectl([...])``,
``k8s.apply(...)``, ``k8s.logs(...)``, ``k8s.wait(...)``, ``k8s.port_forwarding(...)``), not a new cluster.

The manager gets a per-test COPY of the stack's private kubeconfig: pytest-kubernetes' ``delete()`` unlinks the
kubeconfig of a manager that did not create its cluster (pytest_kubernetes/providers/base.py@0.9.0:287-294), and
its fixture calls ``delete()`` after every test (pytest_kubernetes/plugin.py@0.9.0:41-45); the stack's own file
must survive that. This fixture never deletes anything in the cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest


def cluster_manager(stack: Any, folder: Path) -> Any:
    """A pytest-kubernetes manager (its ``external`` provider) for ``stack``'s cluster, through a copy of the
    stack's kubeconfig in ``folder``."""
    kubeconfig = getattr(stack, "kubeconfig", None)
    if kubeconfig is None or not Path(kubeconfig).is_file():
        raise pytest.UsageError(f"the k8s fixture needs a cluster stack (--stack kind or external); the "
                                f"{getattr(stack, 'name', '?')} stack has no kubeconfig")
    from pytest_kubernetes.providers.external import ExternalManagerBase

    copy = folder / "kubeconfig"
    shutil.copyfile(kubeconfig, copy)
    copy.chmod(0o600)
    return ExternalManagerBase(cluster_name=getattr(stack, "name", "otelgate"), kubeconfig=copy)


class K8sFixturePlugin:
    """Registered last (from ``pytest_configure``), so its ``k8s`` is the one tests get, not pytest-kubernetes'
    own (which would create a cluster)."""

    @pytest.fixture
    def k8s(self, stack: Any, tmp_path: Path) -> Any:
        return cluster_manager(stack, tmp_path)
