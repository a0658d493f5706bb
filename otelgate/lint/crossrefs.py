"""``otelgate lint`` check 4, the cross-references: each mismatch is one finding naming both sides."""

from __future__ import annotations

import re
from typing import Any

from otelgate import topology as demo_topology
from otelgate.cluster_topology import TOKEN_PLACEHOLDER, Topology
from otelgate.kongsim.sandbox import snippet_problems
from otelgate.lint.model import (
    CollectorFacts,
    Doc,
    Manifests,
    env_by_name,
    pod_templates,
    port_of,
    receiver,
    url_parts,
)
from otelgate.paths import TOPOLOGY_FILE

SINK_INGEST_PATH = "/api/v2/otlp"   # the sink's dynatrace profile

FRONTEND = "frontend"   # the demo app's workload that calls the services through Kong
# What the demo frontend (odigos simple-demo, GET /products) calls on each service: "http://" + HOST + path.
FRONTEND_CALLS: dict[str, tuple[str, ...]] = {
    "INVENTORY_SERVICE_HOST": ("/inventory",),
    "PRICING_SERVICE_HOST": ("/price?id=1",),
    "COUPON_SERVICE_HOST": ("/coupons",),
}
# Paths each demo service serves (simple-demo v0.1.39), to check what arrives after Kong's strip_path.
SERVICE_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "coupon": ("/coupons", "/apply-coupon", "/healthz"),
    "inventory": ("/inventory", "/buy"),
    "pricing": ("/price",),
    "membership": ("/isMember",),
}


# --- 4. cross-references --------------------------------------------------------------------------------------------


def check_kong_plugins(m: Manifests, c: CollectorFacts, kong: dict[str, Any]) -> None:
    file = "manifests/kong/kong.yaml"
    plugins = {p.get("name"): (p.get("config") or {}) for p in kong.get("plugins") or [] if isinstance(p, dict)}
    otel = plugins.get("opentelemetry")
    if otel is None:
        m.add(file, "no opentelemetry plugin: Kong would send no traces")
    else:
        for key in ("traces_endpoint", "logs_endpoint", "endpoint"):
            if key in otel:
                _check_otlp_http_url(m, file, f"opentelemetry {key}", otel[key], c,
                                     {"traces_endpoint": "/v1/traces", "logs_endpoint": "/v1/logs",
                                      "endpoint": "/v1/traces"}[key])
    tcp = plugins.get("tcp-log")
    if tcp is None:
        m.add(file, "no tcp-log plugin: Kong would send no access logs")
    else:
        if tcp.get("host") != c.service_dns:
            m.add(file, f"tcp-log host {tcp.get('host')!r} is not the collector Service {c.service_dns!r} "
                        f"({c.file}: {c.name} in {c.namespace})")
        if c.tcp_log is not None and str(tcp.get("port")) != str(c.tcp_log):
            m.add(file, f"tcp-log port {tcp.get('port')} != the collector's tcp_log receiver port {c.tcp_log} "
                        f"({c.file})")
        for key, code in (tcp.get("custom_fields_by_lua") or {}).items():  # Kong's sandbox rules, before any run
            for problem in snippet_problems(str(code)):
                m.add(file, f"tcp-log custom_fields_by_lua.{key} {problem}")
    if "prometheus" not in plugins:
        m.add(file, "no prometheus plugin: Kong's Status API /metrics would have no kong_* metrics")


def _check_otlp_http_url(m: Manifests, file: str, what: str, url: Any, c: CollectorFacts, path: str | None) -> None:
    host, port, url_path = url_parts(url)
    if host != c.service_dns:
        m.add(file, f"{what} host {host!r} is not the collector Service {c.service_dns!r} "
                    f"({c.file}: {c.name} in {c.namespace})")
    elif port != c.otlp_http:
        m.add(file, f"{what} port {port} != the collector's otlp http receiver port {c.otlp_http} ({c.file})")
    elif path is not None and url_path != path:
        m.add(file, f"{what} path {url_path!r} should be {path!r} (OTLP/HTTP)")


def check_instrumentation_endpoints(m: Manifests, c: CollectorFacts) -> None:
    for doc in m.objects("Instrumentation"):
        spec = doc.body.get("spec") or {}
        endpoint = (spec.get("exporter") or {}).get("endpoint")
        if endpoint:
            _check_otlp_http_url(m, doc.file, f"Instrumentation/{doc.name} exporter.endpoint", endpoint, c, None)
        for language in ("python", "nodejs", "java", "dotnet", "go", "apacheHttpd", "nginx"):
            for env in (spec.get(language) or {}).get("env") or []:
                if env.get("name") == "OTEL_EXPORTER_OTLP_ENDPOINT":
                    _check_otlp_http_url(m, doc.file, f"Instrumentation/{doc.name} {language} "
                                                      f"OTEL_EXPORTER_OTLP_ENDPOINT", env.get("value"), c, None)
    for doc, template in pod_templates(m):
        for container in (template.get("spec") or {}).get("containers") or []:
            for name, env in env_by_name(container).items():
                value = str(env.get("value") or "")
                if "-collector." in value or name == "OTEL_EXPORTER_OTLP_ENDPOINT":
                    _check_otlp_http_url(m, doc.file, f"{doc.kind}/{doc.name} env {name}", value, c, None)


def check_rbac(m: Manifests, c: CollectorFacts, topology: Topology) -> None:
    account = c.spec.get("serviceAccount")
    if not account:
        m.add(c.file, f"OpenTelemetryCollector/{c.name} sets no spec.serviceAccount: the Operator's default account "
                      f"has no RBAC for the prometheus receiver's pod discovery")
        return
    if not any(d.name == account and d.namespace == c.namespace for d in m.objects("ServiceAccount")):
        m.add(c.file, f"spec.serviceAccount {account!r} has no ServiceAccount in namespace {c.namespace} "
                      f"(manifests/otel/rbac.yaml)")
    roles = {(d.kind, d.namespace if d.kind == "Role" else "", d.name): d for d in
             m.objects("ClusterRole") + m.objects("Role")}
    granted_in: set[str] = set()
    for binding in m.objects("ClusterRoleBinding") + m.objects("RoleBinding"):
        subjects = binding.body.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                   and s.get("namespace", binding.namespace) == c.namespace for s in subjects):
            continue
        ref = binding.body.get("roleRef") or {}
        key = (str(ref.get("kind")), binding.namespace if ref.get("kind") == "Role" else "", str(ref.get("name")))
        role = roles.get(key)
        if role is None:
            m.add(binding.file, f"{binding.kind}/{binding.name} refers to {ref.get('kind')} {ref.get('name')!r}, "
                                f"which the manifests do not define")
            continue
        if _grants_pod_discovery(role.body):
            granted_in.add("*" if binding.kind == "ClusterRoleBinding" else binding.namespace)
    if not granted_in:
        m.add(c.file, f"ServiceAccount {c.namespace}/{account} is bound to no role granting get/list/watch on pods "
                      f"(the prometheus receiver's kubernetes_sd_configs need it)")
    elif "*" not in granted_in and topology.kong_namespace not in granted_in:
        m.add(c.file, f"ServiceAccount {c.namespace}/{account} may discover pods only in {sorted(granted_in)}, not in "
                      f"Kong's namespace {topology.kong_namespace!r}")


def _grants_pod_discovery(role: dict[str, Any]) -> bool:
    for rule in role.get("rules") or []:
        groups, resources, verbs = (set(rule.get(k) or []) for k in ("apiGroups", "resources", "verbs"))
        if ("" in groups or "*" in groups) and ({"pods", "*"} & resources) and (
                {"get", "list", "watch"} <= verbs or "*" in verbs):
            return True
    return False


def check_scrape_config(m: Manifests, c: CollectorFacts, topology: Topology) -> None:
    prometheus = receiver(c.config, ("prometheus",))
    if prometheus is None:
        m.add(c.file, "no prometheus receiver: nothing scrapes Kong's Status API")
        return
    values = m.file_doc("kong/values.yaml") or {}
    status = values.get("status") or {}
    status_http = status.get("http") or {}
    if status.get("enabled") is False or status_http.get("enabled") is False:
        m.add("manifests/kong/values.yaml", "status.http is disabled: the Status API (/metrics) would not listen")
    status_port = int(status_http.get("containerPort", 8100))
    env = values.get("env") or {}
    labels = topology.kong_pod_labels(values)
    target = {f"__meta_kubernetes_pod_label_{_label_name(k)}": v for k, v in labels.items()}
    target |= {f"__meta_kubernetes_pod_labelpresent_{_label_name(k)}": "true" for k in labels}
    target |= {"__meta_kubernetes_namespace": topology.kong_namespace,
               "__meta_kubernetes_pod_container_port_number": str(status_port),
               "__meta_kubernetes_pod_container_port_name": "status",
               "__meta_kubernetes_pod_container_name": "proxy",
               "__meta_kubernetes_pod_ready": "true", "__meta_kubernetes_pod_phase": "Running",
               "__address__": f"10.0.0.1:{status_port}", "__metrics_path__": "/metrics", "__scheme__": "http"}
    jobs = ((prometheus.get("config") or {}).get("scrape_configs")) or []
    kong_jobs = [job for job in jobs if any(sd.get("role") == "pod" for sd in job.get("kubernetes_sd_configs") or [])]
    if not kong_jobs:
        m.add(c.file, "the prometheus receiver has no scrape job with kubernetes_sd_configs role pod (Kong's pods)")
        return
    for job in kong_jobs:
        name = job.get("job_name", "?")
        namespaces = [ns for sd in job.get("kubernetes_sd_configs") or []
                      for ns in ((sd.get("namespaces") or {}).get("names") or [])]
        if namespaces and topology.kong_namespace not in namespaces:
            m.add(c.file, f"scrape job {name}: namespaces {namespaces} do not include Kong's namespace "
                          f"{topology.kong_namespace!r}")
            continue
        outcome = _relabel(job.get("relabel_configs") or [], dict(target))
        if outcome is None:
            m.add(c.file, f"scrape job {name}: its relabel rules drop Kong's pod (labels {labels}, Status API port "
                          f"{status_port} named status); it would scrape nothing")
            continue
        path = job.get("metrics_path", outcome.get("__metrics_path__", "/metrics"))
        if path != "/metrics":
            m.add(c.file, f"scrape job {name}: metrics_path {path!r}; Kong's Status API serves /metrics")
        port = port_of(outcome.get("__address__"))
        if port != status_port:
            m.add(c.file, f"scrape job {name}: scrapes port {port}, but Kong's Status API listens on {status_port} "
                          f"(manifests/kong/values.yaml status.http.containerPort)")
    if str(env.get("database")) != "off":
        m.add("manifests/kong/values.yaml", f"env.database is {env.get('database')!r}; DB-less needs \"off\"")


def _label_name(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabeling (keep, drop, replace; the subset a pod-discovery job uses). None = target dropped."""
    for rule in rules:
        action = str(rule.get("action", "replace")).lower()
        separator = str(rule.get("separator", ";"))
        value = separator.join(labels.get(str(s), "") for s in rule.get("source_labels") or [])
        pattern = str(rule.get("regex", "(.*)")).replace("$$", "$")
        try:
            match = re.fullmatch(pattern, value)
        except re.error:
            return labels  # an invalid regex is the collector's validate's business; do not guess here
        if action == "keep" and match is None:
            return None
        if action == "drop" and match is not None:
            return None
        if action == "replace" and match is not None and rule.get("target_label"):
            replacement = str(rule.get("replacement", "$1")).replace("$$", "$")
            labels[str(rule["target_label"])] = _expand(replacement, match)
    return labels


def _expand(replacement: str, match: re.Match[str]) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda group: match.group(int(group.group(1))) or "", replacement)


def check_kong_services(m: Manifests, kong: dict[str, Any]) -> None:
    services = {(d.namespace, d.name): d for d in m.objects("Service")}
    for service in kong.get("services") or []:
        host, port, _ = url_parts(service.get("url"))
        match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", host)
        if not match:
            m.add("manifests/kong/kong.yaml", f"service {service.get('name')}: upstream host {host!r} is not a "
                                              f"cluster Service DNS name")
            continue
        target = services.get((match.group(2), match.group(1)))
        if target is None:
            m.add("manifests/kong/kong.yaml", f"service {service.get('name')}: upstream {host} names no Service in "
                                              f"the manifests")
        elif port not in [p.get("port") for p in (target.body.get("spec") or {}).get("ports") or []]:
            m.add("manifests/kong/kong.yaml", f"service {service.get('name')}: upstream port {port} is not a port of "
                                              f"Service {target.namespace}/{target.name} ({target.file})")


def _kong_route_for(kong: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """Kong's (traditional) prefix routing: the longest matching route path wins."""
    best: tuple[dict[str, Any], dict[str, Any], str] | None = None
    for service in kong.get("services") or []:
        for route in service.get("routes") or []:
            for prefix in route.get("paths") or []:
                if path.startswith(prefix) and (best is None or len(prefix) > len(best[2])):
                    best = (service, route, prefix)
    return best


def check_frontend(m: Manifests, kong: dict[str, Any], topology: Topology) -> None:
    values = m.file_doc("kong/values.yaml") or {}
    proxy = values.get("proxy") or {}
    proxy_port = int((proxy.get("http") or {}).get("servicePort", 80))
    proxy_dns = f"{topology.kong_proxy_service}.{topology.kong_namespace}.svc.cluster.local"
    kong_services = {s.get("name") for s in kong.get("services") or []}
    for doc, template in pod_templates(m):
        if doc.name != FRONTEND:
            continue
        for container in (template.get("spec") or {}).get("containers") or []:
            env = env_by_name(container)
            for variable, calls in FRONTEND_CALLS.items():
                if variable not in env:
                    continue
                service = variable.removesuffix("_SERVICE_HOST").lower()
                host, port, prefix = url_parts(env[variable].get("value"))
                where = f"{doc.kind}/{doc.name} env {variable}={env[variable].get('value')!r}"
                if host != proxy_dns:
                    if service in kong_services:
                        m.add(doc.file, f"{where} bypasses Kong; it should be {proxy_dns}:{proxy_port}<route path>")
                    continue
                if port != proxy_port:
                    m.add(doc.file, f"{where}: port {port} is not Kong's proxy Service port {proxy_port}")
                    continue
                for call in calls:
                    _check_frontend_call(m, doc.file, where, kong, prefix + call, service)


def _check_frontend_call(m: Manifests, file: str, where: str, kong: dict[str, Any], request: str,
                         service: str) -> None:
    path = request.split("?", 1)[0]
    found = _kong_route_for(kong, path)
    if found is None:
        m.add(file, f"{where}: the frontend's request {path} matches no route in manifests/kong/kong.yaml")
        return
    kong_service, route, prefix = found
    if kong_service.get("name") != service:
        m.add(file, f"{where}: {path} is routed by {route.get('name')} to service {kong_service.get('name')!r}, "
                    f"not {service!r}")
        return
    upstream = path[len(prefix):] if route.get("strip_path", True) else path
    base = url_parts(kong_service.get("url"))[2].rstrip("/")
    upstream = base + ("/" + upstream.lstrip("/") if upstream else "/")
    if upstream not in SERVICE_ENDPOINTS.get(service, (upstream,)):
        m.add(file, f"{where}: Kong forwards {path} to {service} as {upstream}, which {service} does not serve "
                    f"(it serves {list(SERVICE_ENDPOINTS[service])}; check strip_path)")


def check_exporter_secret(m: Manifests, c: CollectorFacts, topology: Topology) -> None:
    try:
        token_env = demo_topology.current(m.root).token_env
    except demo_topology.TopologyError as exc:
        m.add(m.rel(m.root / TOPOLOGY_FILE), str(exc))
        return
    env = {e.get("name"): e for e in c.spec.get("env") or []}
    sink_services = [d for d in m.objects("Service") if d.name == topology.sink_name]
    for variable, purpose in (("DT_ENDPOINT", "endpoint"), (token_env, "token")):
        ref = ((env.get(variable) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if variable not in env:
            m.add(c.file, f"spec.env has no {variable} (the exporter's {purpose})")
            continue
        if not ref:
            if variable == token_env:
                m.add(c.file, f"spec.env {token_env} is not read from a Secret (a literal token in a manifest)")
            continue
        secret = next((d for d in m.objects("Secret") if d.name == ref.get("name") and d.namespace == c.namespace),
                      None)
        if secret is None:
            m.add(c.file, f"spec.env {variable} reads Secret {c.namespace}/{ref.get('name')}, which the manifests do "
                          f"not define")
            continue
        data = secret.body.get("stringData") or {}
        if ref.get("key") not in data:
            m.add(secret.file, f"Secret/{secret.name} has no key {ref.get('key')!r} (read by {c.file} {variable})")
            continue
        value = str(data[ref.get("key")])
        if variable == token_env and value != TOKEN_PLACEHOLDER:
            m.add(secret.file, f"Secret/{secret.name} key {ref.get('key')} holds a literal value; keep the "
                               f"{TOKEN_PLACEHOLDER} placeholder (otelgate fills it in, never commits a token)")
        if variable == "DT_ENDPOINT":
            _check_sink_endpoint(m, secret, value, sink_services, topology)
    for secret in m.objects("Secret"):
        for key, value in (secret.body.get("stringData") or {}).items():
            if "token" in str(key).lower() and str(value) != TOKEN_PLACEHOLDER:
                m.add(secret.file, f"Secret/{secret.name} key {key} holds a literal token; keep {TOKEN_PLACEHOLDER}")


def _check_sink_endpoint(m: Manifests, secret: Doc, value: str, sink_services: list[Doc],
                         topology: Topology) -> None:
    host, port, path = url_parts(value)
    sink_dns = f"{topology.sink_name}.{topology.sink_namespace}.svc.cluster.local"
    if not sink_services:
        m.add(secret.file, f"no Service {topology.sink_name} in the manifests for the exporter endpoint {value}")
        return
    ports = [p.get("port") for p in (sink_services[0].body.get("spec") or {}).get("ports") or []]
    if host != sink_dns:
        m.add(secret.file, f"Secret/{secret.name} endpoint host {host!r} is not the sink Service {sink_dns!r}")
    elif port not in ports:
        m.add(secret.file, f"Secret/{secret.name} endpoint port {port} is not a port of Service "
                           f"{topology.sink_name} {ports} ({sink_services[0].file})")
    elif path.rstrip("/") != SINK_INGEST_PATH:
        m.add(secret.file, f"Secret/{secret.name} endpoint path {path!r} should be {SINK_INGEST_PATH} (the sink's "
                           f"Dynatrace profile; the exporter appends /v1/<signal>)")


def check_kind_ports(m: Manifests, topology: Topology) -> None:
    cluster = m.file_doc("kind/cluster.yaml")
    if cluster is None:
        m.add("manifests/kind", "no kind/cluster.yaml")
        return
    mapped = {int(p.get("containerPort")): p for node in cluster.get("nodes") or []
              for p in node.get("extraPortMappings") or []}
    for p in mapped.values():
        if p.get("listenAddress") != "127.0.0.1":
            m.add("manifests/kind/cluster.yaml", f"port mapping {p.get('containerPort')} listens on "
                                                 f"{p.get('listenAddress', '0.0.0.0')}; bind 127.0.0.1")
    values = m.file_doc("kong/values.yaml") or {}
    proxy = values.get("proxy") or {}
    node_port = (proxy.get("http") or {}).get("nodePort")
    if proxy.get("type") != "NodePort" or node_port is None:
        m.add("manifests/kong/values.yaml", "proxy is not a NodePort Service with proxy.http.nodePort set; the host "
                                            "cannot reach Kong through kind's port mapping")
    elif int(node_port) not in mapped:
        m.add("manifests/kong/values.yaml", f"proxy.http.nodePort {node_port} has no extraPortMappings entry in "
                                            f"manifests/kind/cluster.yaml (mapped: {sorted(mapped)})")
    for service in m.objects("Service"):
        if service.name != topology.sink_name:
            continue
        for port in (service.body.get("spec") or {}).get("ports") or []:
            if port.get("nodePort") is not None and int(port["nodePort"]) not in mapped:
                m.add(service.file, f"Service/{service.name} nodePort {port['nodePort']} has no extraPortMappings "
                                    f"entry in manifests/kind/cluster.yaml (mapped: {sorted(mapped)})")
