"""A real Kubernetes control plane as local processes: etcd, kube-apiserver and the OpenTelemetry Operator.

No kubelet, scheduler or controller-manager: objects are stored and admitted for real (schemas, defaulting, the
Operator's webhooks) and the Operator reconciles its resources into Deployments, Services and ConfigMaps, but no pod
ever runs. The Operator runs outside the cluster with the flags its Helm chart renders from
``manifests/otel/operator-values.yaml``; its webhook server uses a certificate otelgate made, and the API server calls
it by URL (``https://127.0.0.1:<port>/...``) with that CA as ``caBundle``.

Every listener binds 127.0.0.1 except the Operator's webhook server: v0.148.0 passes only a port to
controller-runtime (main.go:228-231 at v0.148.0), so it listens on every interface of this host while it runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from otelgate import paths
from otelgate.controlplane import build, crds
from otelgate.controlplane.certs import Credentials, make_credentials
from otelgate.controlplane.kube import Kube, KubeApiError
from otelgate.procs import ManagedProcess, free_port, wait_port_free
from otelgate.waiting import poll_until

OPERATOR_VALUES = paths.manifest("otel/operator-values.yaml")
START_TIMEOUT_S = 120.0  # the API server's post-start hooks take ~10-40 s on 2 busy cores
Progress = Callable[[str], None]


@dataclass
class ControlPlane:
    workdir: Path
    credentials: Credentials
    server: str
    webhook_port: int
    kube: Kube
    processes: list[ManagedProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def operator(self) -> ManagedProcess:
        return self.processes[-1]

    def stop(self) -> None:
        """Stop the Operator, the API server and etcd (in that order) and wait until their ports are free."""
        self.kube.close()
        for proc in reversed(self.processes):
            proc.stop(grace=10.0)
        for port in self.ports:
            wait_port_free("127.0.0.1", port, timeout=15.0)


def operator_args(values: dict[str, Any]) -> list[str]:
    """The manager flags that the chart's templates/deployment.yaml renders from these values (the ones that
    change behaviour; addresses and ports are set by :func:`start`)."""
    manager = values.get("manager") or {}
    args: list[str] = []
    image = manager.get("collectorImage") or {}
    if image.get("repository") and image.get("tag"):
        args.append(f"--collector-image={image['repository']}:{image['tag']}")
    for language, flag in (("java", "java"), ("nodejs", "nodejs"), ("python", "python"), ("dotnet", "dotnet"),
                           ("go", "go"), ("apacheHttpd", "apache-httpd"), ("nginx", "nginx")):
        chosen = (manager.get("autoInstrumentationImage") or {}).get(language) or {}
        if chosen.get("repository") and chosen.get("tag"):
            args.append(f"--auto-instrumentation-{flag}-image={chosen['repository']}:{chosen['tag']}")
    if ((manager.get("autoInstrumentation") or {}).get("go") or {}).get("enabled"):
        args.append("--enable-go-instrumentation")
    if manager.get("featureGates"):
        args.append(f"--feature-gates={manager['featureGates']}")
    args += [str(a) for a in manager.get("extraArgs") or []]
    return args


def start(workdir: Path, progress: Progress = print, values_file: Path = OPERATOR_VALUES) -> ControlPlane:
    """Build (cached) and start the control plane; install the Operator's CRDs and webhooks; wait until ready."""
    began = time.monotonic()
    binaries = build.ensure_all(progress)
    timings = {"build_or_cache_s": round(time.monotonic() - began, 1)}
    workdir.mkdir(parents=True, exist_ok=True)
    creds = make_credentials(workdir / "pki")
    etcd_client, etcd_peer, api_port, webhook_port, probe_port, metrics_port = (free_port() for _ in range(6))
    server = f"https://127.0.0.1:{api_port}"
    kube = Kube(server, creds.token, creds.ca_cert)
    plane = ControlPlane(workdir, creds, server, webhook_port, kube,
                         ports=[etcd_client, etcd_peer, api_port, webhook_port, probe_port, metrics_port],
                         timings=timings)
    try:
        step = time.monotonic()
        plane.processes.append(_start_etcd(workdir, binaries["etcd"].path, etcd_client, etcd_peer))
        plane.processes.append(_start_apiserver(workdir, binaries["kube-apiserver"].path, creds, api_port,
                                                etcd_client, kube))
        timings["etcd_apiserver_ready_s"] = round(time.monotonic() - step, 1)
        step = time.monotonic()
        install_operator_config(kube, creds, webhook_port)
        values = yaml.safe_load(values_file.read_text()) or {}
        plane.processes.append(_start_operator(workdir, binaries["opentelemetry-operator"].path, creds, server,
                                               values, webhook_port, probe_port, metrics_port))
        timings["operator_ready_s"] = round(time.monotonic() - step, 1)
        timings["total_s"] = round(time.monotonic() - began, 1)
        progress(f"[controlplane] ready at {server} in {timings}")
        return plane
    except BaseException:
        plane.stop()
        raise


def _start_etcd(workdir: Path, binary: Path, client: int, peer: int) -> ManagedProcess:
    data = workdir / "etcd-data"
    proc = ManagedProcess("etcd", [
        str(binary), "--name=otelgate", f"--data-dir={data}", "--log-level=warn", "--unsafe-no-fsync",
        f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=otelgate=http://127.0.0.1:{peer}"], workdir / "etcd.log").start()

    def healthy() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return str(httpx.get(f"http://127.0.0.1:{client}/health", timeout=2.0).json().get("health")) == "true"
        return False

    proc.wait_ready(healthy, f"GET http://127.0.0.1:{client}/health says healthy", timeout=60.0)
    return proc


def _start_apiserver(workdir: Path, binary: Path, creds: Credentials, port: int, etcd_client: int,
                     kube: Kube) -> ManagedProcess:
    proc = ManagedProcess("kube-apiserver", [
        str(binary), f"--etcd-servers=http://127.0.0.1:{etcd_client}", "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={workdir / 'apiserver-certs'}",
        f"--tls-cert-file={creds.serving_cert}", f"--tls-private-key-file={creds.serving_key}",
        f"--token-auth-file={creds.token_file}", "--authorization-mode=RBAC",
        f"--service-account-key-file={creds.sa_key}", f"--service-account-signing-key-file={creds.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        # ClusterIPs are only numbers handed out here: no traffic ever goes to this range
        "--service-cluster-ip-range=10.96.0.0/24", "--enable-priority-and-fairness=false", "--profiling=false",
        "--allow-privileged=true",  # as kind's API server: the Operator's Go instrumentation sidecar is privileged
        "--v=1"], workdir / "kube-apiserver.log").start()

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return kube.raw_get("/readyz").status_code == 200
        return False

    proc.wait_ready(ready, f"GET {kube.server}/readyz answers 200", timeout=START_TIMEOUT_S)
    return proc


def install_operator_config(kube: Kube, creds: Credentials, webhook_port: int) -> None:
    """The Operator's CRDs (the collector CRD with its conversion webhook) and its webhook configurations, every
    ``clientConfig.service`` turned into the URL of the Operator's webhook server on 127.0.0.1."""
    ca_bundle = _b64(creds.ca_cert.read_bytes())
    conversion = crds.load_conversion_patch()
    for crd in crds.load_crds():
        crd = copy.deepcopy(crd)
        if crd["metadata"]["name"] == conversion["metadata"]["name"]:
            crd["spec"]["conversion"] = _url_client(copy.deepcopy(conversion["spec"]["conversion"]),
                                                    ca_bundle, webhook_port, ("webhook", "clientConfig"))
        kube.apply(crd)
        _wait_established(kube, crd["metadata"]["name"])
    for config in crds.load_webhooks():
        config = copy.deepcopy(config)
        config["metadata"]["name"] = f"otelgate-operator-{config['metadata']['name']}"
        for hook in config.get("webhooks") or []:
            _url_client(hook, ca_bundle, webhook_port, ("clientConfig",))
        kube.apply(config)


def _url_client(holder: dict[str, Any], ca_bundle: str, port: int, path: tuple[str, ...]) -> dict[str, Any]:
    node = holder
    for key in path[:-1]:
        node = node[key]
    service = node[path[-1]].pop("service")
    node[path[-1]] = {"url": f"https://127.0.0.1:{port}{service.get('path', '')}", "caBundle": ca_bundle}
    return holder


def _wait_established(kube: Kube, name: str) -> None:
    def conditions() -> dict[str, str]:
        crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        return {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}

    poll_until(conditions, lambda c: c.get("Established") == "True", what=f"CRD {name} Established",
               timeout=60.0, retry_on=(KubeApiError, httpx.HTTPError))


def _start_operator(workdir: Path, binary: Path, creds: Credentials, server: str, values: dict[str, Any],
                    webhook_port: int, probe_port: int, metrics_port: int) -> ManagedProcess:
    kubeconfig = workdir / "kubeconfig.yaml"
    kubeconfig.write_text(json.dumps(kubeconfig_doc(server, creds)))
    kubeconfig.chmod(0o600)
    tmp = workdir / "operator-tmp"
    cert_dir = tmp / "k8s-webhook-server" / "serving-certs"  # controller-runtime's default CertDir under $TMPDIR
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "tls.crt").write_bytes(creds.serving_cert.read_bytes())
    (cert_dir / "tls.key").write_bytes(creds.serving_key.read_bytes())
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TMPDIR": str(tmp), "ENABLE_WEBHOOKS": "true",
           "SERVICE_ACCOUNT_NAME": "otel-operator-opentelemetry-operator",
           "NAMESPACE": "opentelemetry-operator-system"}
    argv = [str(binary), f"--metrics-addr=127.0.0.1:{metrics_port}", "--metrics-secure=false",
            f"--health-probe-addr=127.0.0.1:{probe_port}", f"--webhook-port={webhook_port}",
            *operator_args(values)]
    proc = ManagedProcess("opentelemetry-operator", argv, workdir / "operator.log", env=env).start()

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=2.0).status_code == 200
        return False

    proc.wait_ready(ready, f"GET http://127.0.0.1:{probe_port}/readyz (manager and webhook server started)",
                    timeout=START_TIMEOUT_S)
    return proc


def kubeconfig_doc(server: str, creds: Credentials) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "otelgate",
            "clusters": [{"name": "otelgate", "cluster": {"server": server,
                                                          "certificate-authority": str(creds.ca_cert)}}],
            "users": [{"name": "otelgate", "user": {"token": creds.token}}],
            "contexts": [{"name": "otelgate", "context": {"cluster": "otelgate", "user": "otelgate"}}]}


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


@contextlib.contextmanager
def running(workdir: Path, progress: Progress = print) -> Any:
    plane = start(workdir, progress)
    try:
        yield plane
    finally:
        plane.stop()
