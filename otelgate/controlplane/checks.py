"""The judging logic of the live control-plane checks: what the Operator made of an ``OpenTelemetryCollector``.

Each ``check_*`` function reads the real API server, waits (bounded) for the Operator to converge, and raises
:class:`CheckFailed` naming every difference it saw last. ``*_problems`` are the same judgements on objects already
read, returned as readable strings (empty: nothing wrong). tests/test_controlplane.py runs the checks on the manifests;
tests/test_controlplane_faults.py plants a fault through the real API server and Operator for each and asserts the
stated reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import yaml

from otelgate import paths
from otelgate.collector.config import CollectorPorts, derive_local_config, rewritten_by
from otelgate.configdiff import PathPart, changes
from otelgate.controlplane.kube import Kube, KubeApiError
from otelgate.controlplane.objects import owned_by
from otelgate.waiting import WaitTimeout, poll_until

COLLECTOR_API = "opentelemetry.io/v1beta1"
KONG_FILE = "kong/kong.yaml"
RECONCILE_TIMEOUT_S = 90.0
# What the Operator's defaulting webhook writes into spec.config, each equal to the component's own default, so the
# collector behaves the same with or without it: health_check's path "/" (opentelemetry-operator@v0.148.0
# internal/components/extensions/healthcheckv1.go:19,38-40; the extension's default path is "/" as well).
OPERATOR_DEFAULTS: dict[tuple[PathPart, ...], Any] = {("extensions", "health_check", "path"): "/"}
# Kinds the Operator makes for a deployment-mode collector (internal/manifests/collector/collector.go:26-48 at
# v0.148.0); a variant's cleanup deletes what of these it owns, as the garbage collector (not running here) would.
OWNED_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "ServiceAccount"),
               ("networking.k8s.io/v1", "NetworkPolicy"), ("policy/v1", "PodDisruptionBudget"))
_MISSING = object()


class CheckFailed(AssertionError):
    """A control-plane check found the Operator's objects differing from what they must be; the message says how."""


def _fail_after_wait(what: str, problems: Callable[[], list[str]], timeout: float) -> None:
    """Wait until ``problems()`` is empty; else raise CheckFailed with the last problems seen."""
    try:
        poll_until(problems, lambda found: not found, what=what, timeout=timeout, interval=0.5,
                   retry_on=(httpx.HTTPError,))
    except WaitTimeout as timed_out:
        last = timed_out.last if isinstance(timed_out.last, list) else [repr(timed_out.last_error)]
        raise CheckFailed(f"{what}: still wrong after {timeout:.0f} s: " + "; ".join(map(str, last))) from None


def _title(cr: Mapping[str, Any]) -> str:
    return f"OpenTelemetryCollector {cr['metadata']['namespace']}/{cr['metadata']['name']}"


def made_by_operator(kube: Kube, cr: Mapping[str, Any], api_version: str, kind: str) -> list[dict[str, Any]]:
    """The objects of ``kind`` whose ownerReferences name the collector resource (by uid)."""
    return owned_by(kube, api_version, kind, cr["metadata"]["namespace"], cr["metadata"]["uid"])


def wait_made(kube: Kube, cr: Mapping[str, Any], api_version: str, kind: str, minimum: int = 1,
              timeout: float = RECONCILE_TIMEOUT_S) -> list[dict[str, Any]]:
    return poll_until(lambda: made_by_operator(kube, cr, api_version, kind), lambda found: len(found) >= minimum,
                      what=f"the Operator to create {minimum}+ {kind} owned by {_title(cr)}", timeout=timeout,
                      retry_on=(httpx.HTTPError,))


def stored(kube: Kube, cr: Mapping[str, Any]) -> dict[str, Any]:
    meta = cr["metadata"]
    return kube.get(cr.get("apiVersion", COLLECTOR_API), "OpenTelemetryCollector", meta["name"], meta["namespace"])


def delete_with_owned(kube: Kube, cr: Mapping[str, Any]) -> None:
    """Delete a collector resource and what the Operator made for it (no garbage collector runs here)."""
    meta = cr["metadata"]
    try:
        uid = stored(kube, cr)["metadata"]["uid"]
    except KubeApiError as exc:
        if exc.code == 404:
            return
        raise
    kube.delete(cr.get("apiVersion", COLLECTOR_API), "OpenTelemetryCollector", meta["name"], meta["namespace"])
    for api_version, kind in OWNED_KINDS:
        for item in owned_by(kube, api_version, kind, meta["namespace"], uid):
            kube.delete(api_version, kind, item["metadata"]["name"], meta["namespace"])


# ------------------------------------------------------------------------------------------------ reconcile
def collector_container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    # the collector's container name: naming.Container(), internal/naming/main.go:44-46 at v0.148.0
    found = [c for c in containers if c["name"] == "otc-container"]
    return dict(found[0] if found else containers[0])


def reconcile_problems(kube: Kube, cr: Mapping[str, Any]) -> list[str]:
    """How the Operator's Deployment, ConfigMap, Services and NetworkPolicy for ``cr`` (as stored) fail to follow it."""
    cr = stored(kube, cr)
    spec, name = cr["spec"], cr["metadata"]["name"]
    problems: list[str] = []
    deployments = made_by_operator(kube, cr, "apps/v1", "Deployment")
    if len(deployments) != 1:
        problems.append(f"expected one Deployment owned by it, found {[d['metadata']['name'] for d in deployments]}")
    else:
        deployment = deployments[0]
        pod = deployment["spec"]["template"]["spec"]
        container = collector_container(deployment)
        if spec.get("image") and container.get("image") != spec["image"]:
            problems.append(f"Deployment image {container.get('image')!r} != the resource's spec.image "
                            f"{spec.get('image')!r}")
        if spec.get("serviceAccount") and pod.get("serviceAccountName") != spec["serviceAccount"]:
            problems.append(f"Deployment serviceAccountName {pod.get('serviceAccountName')!r} != the resource's "
                            f"spec.serviceAccount {spec['serviceAccount']!r}")
        env = {e["name"]: e for e in container.get("env") or []}
        problems += [f"Deployment env {wanted['name']}: {env.get(wanted['name'])} != the resource's {wanted}"
                     for wanted in spec.get("env") or [] if env.get(wanted["name"]) != wanted]
        problems += _network_policy_problems(kube, cr, deployment)
        configmaps = {c["metadata"]["name"] for c in made_by_operator(kube, cr, "v1", "ConfigMap")}
        mounted = {v["configMap"]["name"] for v in pod.get("volumes") or [] if "configMap" in v}
        if not mounted & configmaps:
            problems.append(f"the Deployment mounts ConfigMaps {sorted(mounted)}, none of those it owns "
                            f"{sorted(configmaps)} (the rendered collector config)")
    services = {s["metadata"]["name"] for s in made_by_operator(kube, cr, "v1", "Service")}
    wanted_services = {f"{name}-collector", f"{name}-collector-headless", f"{name}-collector-monitoring"}
    if not wanted_services <= services:
        problems.append(f"Services {sorted(wanted_services - services)} missing (it owns {sorted(services)})")
    return problems


def _network_policy_problems(kube: Kube, cr: Mapping[str, Any], deployment: Mapping[str, Any]) -> list[str]:
    """spec.networkPolicy.enabled: a NetworkPolicy selecting the collector's pods and admitting every container
    port (internal/manifests/collector/networkpolicy.go:17-63 at v0.148.0); not enabled: none."""
    policies = made_by_operator(kube, cr, "networking.k8s.io/v1", "NetworkPolicy")
    enabled = bool((cr["spec"].get("networkPolicy") or {}).get("enabled"))
    if not enabled:
        return [f"spec.networkPolicy is not enabled, yet it owns NetworkPolicy {p['metadata']['name']}"
                for p in policies]
    if len(policies) != 1:
        return [f"spec.networkPolicy.enabled is true but it owns {len(policies)} NetworkPolicies "
                f"{[p['metadata']['name'] for p in policies]}"]
    policy = policies[0]["spec"]
    labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
    selector = (policy.get("podSelector") or {}).get("matchLabels") or {}
    problems = [] if selector and selector.items() <= labels.items() else [
        f"NetworkPolicy podSelector {selector} does not select the collector's pod labels {labels}"]
    allowed = {int(p["port"]) for rule in policy.get("ingress") or [] for p in rule.get("ports") or []}
    container_ports = {int(p["containerPort"]) for p in collector_container(deployment).get("ports") or []}
    if container_ports - allowed:
        problems.append(f"NetworkPolicy admits ports {sorted(allowed)}, not the container ports "
                        f"{sorted(container_ports - allowed)}")
    return problems


def check_reconciled(kube: Kube, cr: Mapping[str, Any], timeout: float = RECONCILE_TIMEOUT_S) -> None:
    _fail_after_wait(f"the Operator's objects for {_title(cr)}", lambda: reconcile_problems(kube, cr), timeout)


# ------------------------------------------------------------------------------------------------ ports
@dataclass(frozen=True)
class ServiceRef:
    """A client's pointer at a Service: ``where`` it is written, ``service``.``namespace``:``port``."""

    where: str
    service: str
    namespace: str
    port: int

    def retarget(self, old_prefix: str, new_prefix: str, namespace: str) -> ServiceRef:
        """The same pointer at another collector resource's Services (for a variant applied beside the original)."""
        if not self.service.startswith(old_prefix):
            return self
        return replace(self, service=new_prefix + self.service.removeprefix(old_prefix), namespace=namespace)


_SVC_URL = re.compile(r"^(?:[a-z]+://)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)")


def service_references(kong: Mapping[str, Any], instrumentation: Mapping[str, Any]) -> list[ServiceRef]:
    """Every pointer at a Service in Kong's declarative config (plugin ``host``/``port`` pairs and URLs) and in the
    Instrumentation's spec (URLs)."""
    refs: list[ServiceRef] = []
    for plugin in kong.get("plugins") or []:
        config = plugin.get("config") or {}
        if "host" in config and "port" in config:
            host = str(config["host"]).split(".")
            refs.append(ServiceRef(f"kong plugin {plugin['name']} host/port", host[0], host[1], int(config["port"])))
        refs += [_ref(f"kong plugin {plugin['name']} {key}", value) for key, value in config.items()
                 if isinstance(value, str) and _SVC_URL.match(value)]

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")
        elif isinstance(node, str) and _SVC_URL.match(node):
            refs.append(_ref(f"Instrumentation {instrumentation['metadata']['name']} {where}", node))

    walk(instrumentation["spec"], "spec")
    return refs


def manifest_service_references(instrumentation: Mapping[str, Any]) -> list[ServiceRef]:
    """:func:`service_references` of the manifests' kong.yaml and the given Instrumentation."""
    kong = yaml.safe_load(paths.manifest(KONG_FILE).read_text())
    return service_references(kong, instrumentation)


def _ref(where: str, url: str) -> ServiceRef:
    match = _SVC_URL.match(url)
    if match is None:
        raise ValueError(f"{where}: {url!r} names no <service>.<namespace>.svc:<port>")
    return ServiceRef(where, match.group(1), match.group(2), int(match.group(3)))


def exporter_port(cr: Mapping[str, Any], exporter: str = "prometheus") -> int | None:
    """The port of an exporter's ``endpoint`` (the prometheus exporter a scrape config points at)."""
    endpoint = ((cr["spec"]["config"].get("exporters") or {}).get(exporter) or {}).get("endpoint")
    return int(str(endpoint).rsplit(":", 1)[1]) if endpoint else None


def port_problems(services: Sequence[Mapping[str, Any]], cr: Mapping[str, Any],
                  refs: Sequence[ServiceRef]) -> list[str]:
    """Every pointer at the collector's Services (and its prometheus exporter's port) that no Service port serves."""
    name, namespace = cr["metadata"]["name"], cr["metadata"]["namespace"]
    ports = {s["metadata"]["name"]: {int(p["port"]) for p in s["spec"].get("ports") or []} for s in services}
    ours = [r for r in refs if r.service.startswith(f"{name}-collector")]
    problems = [f"{r.where} -> {r.service}.{r.namespace}:{r.port}: "
                + (f"the collector is in namespace {namespace}" if r.namespace != namespace else
                   f"no such port (Service {r.service} exposes {sorted(ports.get(r.service, set())) or 'nothing'})")
                for r in ours if r.namespace != namespace or r.port not in ports.get(r.service, set())]
    scrape = exporter_port(cr)
    if scrape is not None and scrape not in ports.get(f"{name}-collector", set()):
        problems.append(f"prometheus exporter port {scrape} (what a scrape config points at): not exposed by Service "
                        f"{name}-collector ({sorted(ports.get(f'{name}-collector', set()))})")
    return problems


def check_service_ports(kube: Kube, cr: Mapping[str, Any], refs: Sequence[ServiceRef],
                        timeout: float = RECONCILE_TIMEOUT_S) -> None:
    """The Operator's Services for ``cr`` expose every port its clients (``refs``) use; at least one client must
    point at them (else nothing was checked)."""
    name = cr["metadata"]["name"]
    if not [r for r in refs if r.service.startswith(f"{name}-collector")]:
        raise CheckFailed(f"no client points at {_title(cr)}'s Services: {refs}")
    cr = stored(kube, cr)
    _fail_after_wait(f"the Services of {_title(cr)} to expose every port its clients use",
                     lambda: port_problems(made_by_operator(kube, cr, "v1", "Service"), cr, refs), timeout)


# ------------------------------------------------------------------------------------------------ rendered config
def rendered_config(kube: Kube, cr: Mapping[str, Any], timeout: float = RECONCILE_TIMEOUT_S) -> dict[str, Any]:
    """The collector config in the ConfigMap the Operator's Deployment mounts (the Operator names ConfigMaps by a
    hash of the config and keeps older ones, so the mounted one is the one that runs)."""
    cr = stored(kube, cr)
    [deployment] = wait_made(kube, cr, "apps/v1", "Deployment", timeout=timeout)[:1]
    mounted = {v["configMap"]["name"] for v in deployment["spec"]["template"]["spec"].get("volumes") or []
               if "configMap" in v}
    configmaps = [c for c in made_by_operator(kube, cr, "v1", "ConfigMap") if c["metadata"]["name"] in mounted]
    if len(configmaps) != 1:
        raise CheckFailed(f"Deployment {deployment['metadata']['name']} mounts ConfigMaps {sorted(mounted)}; "
                          f"{len(configmaps)} of them are owned by {_title(cr)}")
    data = configmaps[0].get("data") or {}
    if "collector.yaml" not in data:
        raise CheckFailed(f"ConfigMap {configmaps[0]['metadata']['name']} holds no collector.yaml: {sorted(data)}")
    loaded = yaml.safe_load(data["collector.yaml"])
    if not isinstance(loaded, dict):
        raise CheckFailed(f"ConfigMap {configmaps[0]['metadata']['name']}: collector.yaml is no mapping")
    return loaded


def lookup(config: Any, path: Sequence[PathPart]) -> Any:
    """The value at a configdiff path (list items by ``name`` or index); a private sentinel when absent."""
    for key in path:
        if isinstance(config, dict) and key in config:
            config = config[key]
        elif isinstance(config, list):
            named = [item for item in config if isinstance(item, dict) and item.get("name") == key]
            if named:
                config = named[0]
            elif isinstance(key, int) and 0 <= key < len(config):
                config = config[key]
            else:
                return _MISSING
        else:
            return _MISSING
    return config


def config_problems(rendered: Mapping[str, Any], manifest_config: Mapping[str, Any]) -> list[str]:
    """Differences between the Operator's rendering and the config the local stack derives from the manifest's
    ``spec.config`` that neither a listed rewrite (otelgate.collector.config.REWRITES) nor a listed Operator default
    explains."""
    local = derive_local_config(manifest_config, ports=CollectorPorts.allocate(),
                                sink_endpoint="http://127.0.0.1:1/api/v2/otlp", kong_status_target="127.0.0.1:2")
    found = changes(rendered, local)
    problems = [f"the Operator no longer writes {'.'.join(map(str, path))} = {value!r} (an OPERATOR_DEFAULTS entry)"
                for path, value in OPERATOR_DEFAULTS.items() if lookup(rendered, path) != value]
    if not found:
        problems.append("the local config equals the Operator's: the rewrites to loopback ports did not happen")
    for change in found:
        if rewritten_by(change.path) is None and change.path not in OPERATOR_DEFAULTS:
            cluster = lookup(rendered, change.path)
            problems.append(f"{change.dotted}: the Operator renders "
                            f"{'nothing' if cluster is _MISSING else repr(cluster)}, the local stack runs "
                            f"{'nothing' if change.after is None else repr(change.after)} (not a listed rewrite)")
    return problems


def check_rendered_config(kube: Kube, cr: Mapping[str, Any], manifest_config: Mapping[str, Any],
                          timeout: float = RECONCILE_TIMEOUT_S) -> None:
    """The config the Operator renders for ``cr`` is what the local stack runs for ``manifest_config``, up to the
    listed rewrites and Operator defaults."""
    def problems() -> list[str]:
        try:
            return config_problems(rendered_config(kube, cr, timeout), manifest_config)
        except CheckFailed as not_yet:  # e.g. the Deployment already mounts a ConfigMap not listed yet
            return [str(not_yet)]

    _fail_after_wait(f"the collector config the Operator renders for {_title(cr)} to be the local stack's up to "
                     f"the listed rewrites", problems, timeout)


# ------------------------------------------------------------------------------------------------ scale
def deployment_replicas(kube: Kube, cr: Mapping[str, Any]) -> dict[str, int]:
    return {d["metadata"]["name"]: int(d["spec"].get("replicas", 1))
            for d in made_by_operator(kube, cr, "apps/v1", "Deployment")}


def check_scaled(kube: Kube, cr: Mapping[str, Any], replicas: int, timeout: float = 60.0) -> None:
    """Scale the resource through its scale subresource (what ``kubectl scale`` does) and wait for the Operator to
    write the same spec.replicas into its Deployment (no controller-manager: the Deployment's spec, not pods)."""
    cr = stored(kube, cr)
    meta = cr["metadata"]
    kube.scale(cr["apiVersion"], "OpenTelemetryCollector", meta["name"], meta["namespace"], replicas)

    def problems() -> list[str]:
        found = deployment_replicas(kube, cr)
        if not found:
            return ["no Deployment owned by it"]
        return [f"Deployment {name} spec.replicas stayed {count} (the resource was scaled to {replicas})"
                for name, count in found.items() if count != replicas]

    _fail_after_wait(f"the Operator to scale {_title(cr)}'s Deployment to {replicas}", problems, timeout)
