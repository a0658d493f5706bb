"""The Operator's CRDs and webhook configuration, taken from its Go module at the pinned version and cached.

``config/crd/bases/*.yaml``, ``config/webhook/manifests.yaml``, ``versions.txt`` and the Python image's
``requirements.txt`` of ``github.com/open-telemetry/opentelemetry-operator`` (all ship in the module zip). The first
use copies them out of the Go module cache (downloading the module from the proxy if needed) into
``~/.cache/otelgate/controlplane/operator-<version>-config/``; later uses, including ``otelgate lint``, read only
that folder: no Go, no network.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from otelgate.controlplane.build import cache_root, module_dir
from otelgate.controlplane.versions import OPERATOR_MODULE, OPERATOR_VERSION

CRD_DIR = "config/crd/bases"
WEBHOOK_FILE = "config/webhook/manifests.yaml"
CONVERSION_PATCH = "config/crd/patches/webhook_in_opentelemetrycollectors.yaml"
VERSIONS_FILE = "versions.txt"
PYTHON_REQUIREMENTS = "autoinstrumentation/python/requirements.txt"
SINGLE_FILES = (WEBHOOK_FILE, CONVERSION_PATCH, VERSIONS_FILE, PYTHON_REQUIREMENTS)


class CrdsUnavailable(RuntimeError):
    """The CRDs are not cached and could not be taken from the Go module (no Go, or the proxy refused)."""


def config_dir(version: str = OPERATOR_VERSION) -> Path:
    return cache_root() / f"operator-{version}-config"


def ensure_config(version: str = OPERATOR_VERSION, *, fetch: bool = True) -> Path:
    """The cached copy of the Operator's CRDs and webhook manifests; copied from the module when missing."""
    target = config_dir(version)
    if all((target / name).is_file() for name in SINGLE_FILES):
        return target
    if not fetch:
        raise CrdsUnavailable(f"the Operator {version} CRDs are not cached in {target}; run "
                              f"`otelgate lint --ensure-crds` (needs Go and the module proxy) first")
    try:
        source = module_dir(OPERATOR_MODULE, version, progress=lambda _line: None)
    except RuntimeError as exc:
        raise CrdsUnavailable(f"cannot take the Operator {version} CRDs from its Go module: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for relative in [*(p.relative_to(source).as_posix() for p in sorted((source / CRD_DIR).glob("*.yaml"))),
                     *SINGLE_FILES]:
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, staging / relative)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def load_crds(version: str = OPERATOR_VERSION, *, fetch: bool = True) -> list[dict[str, Any]]:
    """The CRDs (parsed once per process: the collector CRD alone is ~10,000 lines). Do not mutate the result."""
    root = ensure_config(version, fetch=fetch)
    return list(_parsed_crds(root))


@functools.lru_cache(maxsize=4)
def _parsed_crds(root: Path) -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: ~10x faster
    return tuple(doc for path in sorted((root / CRD_DIR).glob("*.yaml"))
                 for doc in yaml.load_all(path.read_text(), Loader=loader) if isinstance(doc, dict))


def operator_file(relative: str, version: str = OPERATOR_VERSION, *, fetch: bool = True) -> str:
    """One of :data:`SINGLE_FILES` as text (e.g. ``versions.txt``)."""
    return (ensure_config(version, fetch=fetch) / relative).read_text()


def load_webhooks(version: str = OPERATOR_VERSION, *, fetch: bool = True) -> list[dict[str, Any]]:
    text = (ensure_config(version, fetch=fetch) / WEBHOOK_FILE).read_text()
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def load_conversion_patch(version: str = OPERATOR_VERSION, *, fetch: bool = True) -> dict[str, Any]:
    doc = yaml.safe_load((ensure_config(version, fetch=fetch) / CONVERSION_PATCH).read_text())
    if not isinstance(doc, dict):
        raise CrdsUnavailable(f"{CONVERSION_PATCH} of the Operator {version} is not a mapping")
    return doc


def schema_for(crds: list[dict[str, Any]], api_version: str, kind: str) -> dict[str, Any] | None:
    """The ``openAPIV3Schema`` of ``kind`` at ``api_version`` (group/version), or None if no CRD serves it."""
    group, _, version = api_version.partition("/")
    for crd in crds:
        spec = crd.get("spec") or {}
        if spec.get("group") != group or (spec.get("names") or {}).get("kind") != kind:
            continue
        for served in spec.get("versions") or []:
            if served.get("name") == version and served.get("served"):
                return dict((served.get("schema") or {}).get("openAPIV3Schema") or {})
    return None


def served_versions(crds: list[dict[str, Any]], group: str, kind: str) -> list[str]:
    return [f"{group}/{v['name']}" for crd in crds if (crd.get("spec") or {}).get("group") == group
            and ((crd.get("spec") or {}).get("names") or {}).get("kind") == kind
            for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")]


def lint_custom_resource(body: dict[str, Any], version: str = OPERATOR_VERSION) -> list[str]:
    """Findings for one ``opentelemetry.io`` resource against the Operator's CRD schema (offline; for ``otelgate
    lint``): a version the CRDs do not serve, unknown fields, wrong types, missing required fields, enum values."""
    from otelgate.controlplane.crdschema import validate

    api, kind = str(body.get("apiVersion", "")), str(body.get("kind", ""))
    where = f"{kind}/{(body.get('metadata') or {}).get('name', '')}"
    try:
        known = load_crds(version)
    except CrdsUnavailable as exc:
        return [f"{where}: not validated: {exc}"]
    schema = schema_for(known, api, kind)
    if schema is None:
        served = served_versions(known, api.partition("/")[0], kind)
        return [f"{where}: the Operator {version} CRDs do not serve {api} {kind} (served: {served or 'none'})"]
    return [f"{where}: {problem} (Operator {version} CRD schema)" for problem in validate(body, schema)]
