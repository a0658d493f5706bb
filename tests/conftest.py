"""Fixtures shared by the live control-plane tests (tests/test_controlplane*.py): ONE control plane per session.

They start nothing unless a test asks for them (etcd + kube-apiserver + the Operator; see otelgate/controlplane).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from otelgate.controlplane.cluster import ControlPlane
from otelgate.controlplane.kube import Kube
from otelgate.controlplane.objects import Documents, applied_documents, apply_all
from otelgate.controlplane.testing import control_plane_or_skip


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from control_plane_or_skip(tmp_path_factory.mktemp("controlplane"))


@pytest.fixture(scope="session")
def kube(plane: ControlPlane) -> Kube:
    return plane.kube


@pytest.fixture(scope="session")
def documents() -> Documents:
    return applied_documents()


@pytest.fixture(scope="session")
def applied(kube: Kube, documents: Documents) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every manifest otelgate applies without Helm, applied by server-side apply (what the server stored)."""
    return apply_all(kube, documents)
