"""A small Kubernetes REST client over httpx: discovery, server-side apply, create (also dry-run), get, patch, delete.

Only what the control-plane checks need; every call has a timeout, and an error carries the API server's own
``Status`` message (that message is what the checks compare against, e.g. an unknown field or a webhook denial).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REQUEST_TIMEOUT_S = 30.0
FIELD_MANAGER = "otelgate"


class KubeApiError(RuntimeError):
    """The API server answered with an error Status; ``message`` is its text, ``code`` the HTTP status."""

    def __init__(self, code: int, message: str, reason: str, what: str) -> None:
        self.code, self.message, self.reason = code, message, reason
        super().__init__(f"{what}: HTTP {code} {reason}: {message}")


@dataclass(frozen=True)
class Resource:
    plural: str
    namespaced: bool


class Kube:
    def __init__(self, server: str, token: str, ca_file: Path, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.server = server
        self._http = httpx.Client(base_url=server, verify=ssl.create_default_context(cafile=str(ca_file)),
                                  timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})
        self._resources: dict[str, dict[str, Resource]] = {}

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------------------------- discovery
    def resource(self, api_version: str, kind: str) -> Resource:
        if api_version not in self._resources:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            doc = self._request("GET", base, what=f"discovery of {api_version}")
            self._resources[api_version] = {
                item["kind"]: Resource(item["name"], bool(item["namespaced"]))
                for item in doc.get("resources", []) if "/" not in item["name"]}
        found = self._resources[api_version].get(kind)
        if found is None:
            self._resources.pop(api_version)  # a CRD may be established later: look again next time
            raise KubeApiError(404, f"the server has no kind {kind} in {api_version}", "NotFound", "discovery")
        return found

    def path(self, api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
        res = self.resource(api_version, kind)
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        parts = [base]
        if res.namespaced:
            parts.append(f"namespaces/{namespace or 'default'}")
        parts.append(res.plural)
        if name:
            parts.append(name)
        return "/".join(parts)

    # ------------------------------------------------------------------------------------------- verbs
    def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False, force: bool = True) -> dict[str, Any]:
        """Server-side apply (``application/apply-patch+yaml``), as ``kubectl apply --server-side`` does."""
        meta = obj.get("metadata") or {}
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        params = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false",
                  "fieldValidation": "Strict"}
        if dry_run:
            params["dryRun"] = "All"
        return self._request("PATCH", path, what=f"server-side apply of {_name(obj)}", params=params,
                             content=json.dumps(obj), content_type="application/apply-patch+yaml")

    def create(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        params = {"fieldValidation": "Strict", **({"dryRun": "All"} if dry_run else {})}
        return self._request("POST", path, what=f"create of {_name(obj)}", params=params, content=json.dumps(obj),
                             content_type="application/json")

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self._request("GET", self.path(api_version, kind, namespace, name),
                             what=f"get {kind} {namespace or ''}/{name}")

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        doc = self._request("GET", self.path(api_version, kind, namespace), what=f"list {kind}", params=params)
        return list(doc.get("items") or [])

    def merge_patch(self, api_version: str, kind: str, name: str, namespace: str | None,
                    patch: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", self.path(api_version, kind, namespace, name), what=f"patch {kind} {name}",
                             content=json.dumps(patch), content_type="application/merge-patch+json")

    def scale(self, api_version: str, kind: str, name: str, namespace: str | None, replicas: int) -> dict[str, Any]:
        """Set spec.replicas through the ``scale`` subresource, as ``kubectl scale`` does."""
        return self._request("PATCH", self.path(api_version, kind, namespace, name) + "/scale",
                             what=f"scale {kind} {name} to {replicas}",
                             content=json.dumps({"spec": {"replicas": replicas}}),
                             content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            self._request("DELETE", self.path(api_version, kind, namespace, name), what=f"delete {kind} {name}")
        except KubeApiError as exc:
            if exc.code != 404:
                raise

    def raw_get(self, path: str) -> httpx.Response:
        return self._http.get(path)

    def _request(self, method: str, path: str, *, what: str, params: Mapping[str, str] | None = None,
                 content: str | None = None, content_type: str | None = None) -> dict[str, Any]:
        headers = {"Content-Type": content_type} if content_type else None
        response = self._http.request(method, path, params=params, content=content, headers=headers)
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:2000]}
        if response.status_code >= 400:
            raise KubeApiError(response.status_code, str(body.get("message", "")), str(body.get("reason", "")),
                               f"{what} ({method} {path})")
        return body if isinstance(body, dict) else {"items": body}


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {ns}{meta.get('name')}"
