"""Fake ``kubectl``, ``helm``, ``kind`` and ``docker`` executables for the kind/external stack tests: each test
writes them into a folder it puts first on PATH. They record every call (argv and stdin) and answer from a small JSON
state the test scripts; nothing here shares code with what it judges (otelgate.stacks.*).

State keys (``state.json`` beside the executables):
- ``collector_replicas``: the collector resource's spec.replicas. ``kubectl scale opentelemetrycollector/...``
  sets it; ``kubectl scale deployment ...`` does not (the Operator writes the Deployment's replicas back from the
  resource, as it does in a cluster); ``get pods -l app.kubernetes.io/name=<x>-collector`` lists that many pods.
- ``namespaces``: name -> labels of namespaces that exist; ``helm_secrets``: release records
  (``{"name", "namespace", "labels"}``).
- ``deployments``: namespace -> list of Deployment objects for ``get deployments``; ``pods``: namespace -> pods;
  ``logs``: "<pod>/<container>" -> text; ``endpoints_ready``: bool.
- ``break_forwards_on_helm``: ``helm upgrade`` marks every running port-forward broken (the process keeps running,
  its tunnel answers nothing: the pod behind it is gone).
- ``kind_clusters``: names ``kind get clusters`` prints; ``kind create cluster`` adds the config's name.
- ``crds``: CRD names ``kubectl get crd`` finds (a cluster that already runs cert-manager / the Operator).
- ``kubectl apply`` records the Namespaces it applies (with their labels); ``helm upgrade --install`` records a
  release (with its ``--labels``), as Helm's release Secret would.
- ``docker_images``: tags ``docker image inspect`` finds; ``docker build --tag`` adds one.
- ``forbid_cluster_secrets``: listing Secrets in all namespaces is forbidden (a user with namespace-scoped rights).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

_COMMON = r'''
import json, os, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
STATE = os.path.join(HERE, "state.json")
def load():
    with open(STATE) as f:
        return json.load(f)
def save(state):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE)
def record(tool):
    argv = sys.argv[1:]
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    with open(os.path.join(HERE, "calls.jsonl"), "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin}) + "\n")
    return argv, stdin
def strip_kubeconfig(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--kubeconfig":
            skip = True
            continue
        out.append(a)
    return out
def value(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None
'''

_KUBECTL = _COMMON + r'''
argv, stdin = record("kubectl")
a = strip_kubeconfig(argv)
state = load()
ns = value(a, "-n") or value(a, "--namespace")
if a[:1] == ["port-forward"]:
    local = int([x for x in a if ":" in x and x.split(":")[0].isdigit()][0].split(":")[0])
    import http.server, socketserver
    marker = os.path.join(HERE, f"forward-{os.getpid()}")
    open(marker, "w").close()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if os.path.exists(marker + ".broken"):
                self.close_connection = True
                return  # a dead tunnel: the connection closes without an answer
            healthz = self.path == "/healthz"  # the sink's health check; anything else: Kong's 404
            self.send_response(200 if healthz else 404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        def version_string(self):
            return "kong/3.9.1"
        def log_message(self, *args):
            pass
    socketserver.TCPServer.allow_reuse_address = True
    with socketserver.TCPServer(("127.0.0.1", local), H) as server:
        server.serve_forever()
    sys.exit(0)
if a[:1] == ["scale"]:
    target = a[1]
    replicas = int([x for x in a if x.startswith("--replicas=")][0].split("=", 1)[1])
    if target.startswith("opentelemetrycollector/"):
        state["collector_replicas"] = replicas
        save(state)
    print(f"{target} scaled")
    sys.exit(0)
if a[:2] == ["get", "pods"]:
    selector = value(a, "-l") or ""
    if selector.endswith("-collector"):
        items = [{"metadata": {"name": f"collector-{i}"}} for i in range(state.get("collector_replicas", 1))]
    else:
        items = state.get("pods", {}).get(ns, [])
    print(json.dumps({"items": items}))
    sys.exit(0)
if a[:2] == ["get", "deployments"]:
    print(json.dumps({"items": state.get("deployments", {}).get(ns, [])}))
    sys.exit(0)
if a[:2] == ["get", "endpointslices"]:
    ready = state.get("endpoints_ready", True)
    print(json.dumps({"items": [{"endpoints": [{"conditions": {"ready": ready}}]}]}))
    sys.exit(0)
if a[:2] == ["get", "namespace"]:
    labels = state.get("namespaces", {}).get(a[2])
    if labels is not None:
        print(json.dumps({"metadata": {"name": a[2], "labels": labels}}))
    sys.exit(0)
if a[:2] == ["get", "secrets"] and "--all-namespaces" in a and state.get("forbid_cluster_secrets"):
    print('Error from server (Forbidden): secrets is forbidden: User "dev" cannot list resource "secrets" in API '
          'group "" at the cluster scope', file=sys.stderr)
    sys.exit(1)
if a[:2] == ["get", "secrets"]:
    selector = dict(kv.split("=", 1) for kv in (value(a, "-l") or "").split(","))
    items = [{"metadata": {"name": f"sh.helm.release.v1.{s['name']}.v1", "namespace": s["namespace"],
                           "labels": {"owner": "helm", "name": s["name"], **s.get("labels", {})}}}
             for s in state.get("helm_secrets", [])
             if all({"owner": "helm", "name": s["name"], **s.get("labels", {})}.get(k) == v
                    for k, v in selector.items()) and (ns is None or s["namespace"] == ns)]
    print(json.dumps({"items": items}))
    sys.exit(0)
if a[:1] == ["logs"]:
    pod, container = a[1], value(a, "-c")
    print(state.get("logs", {}).get(f"{pod}/{container}", ""))
    sys.exit(0)
if a[:2] == ["get", "--raw='/readyz?verbose'"] or a[:2] == ["get", "--raw=/readyz?verbose"]:
    if state.get("cluster_ready"):
        print("readyz check passed")
        sys.exit(0)
    print("connection refused", file=sys.stderr)
    sys.exit(1)
if a[:3] == ["get", "sa", "default"]:
    sys.exit(0 if state.get("cluster_ready") else 1)
if a[:2] == ["get", "crd"]:
    sys.exit(0 if a[2] in state.get("crds", []) else 1)
if a[:1] == ["apply"] and "--dry-run=server" not in a:
    import yaml
    source = stdin if a[-1] == "-" else open(a[-1]).read()
    for doc in yaml.safe_load_all(source):
        if doc and doc.get("kind") == "Namespace":
            meta = doc["metadata"]
            state.setdefault("namespaces", {})[meta["name"]] = meta.get("labels") or {}
    save(state)
    sys.exit(0)
if a[:2] == ["delete", "namespace"]:
    state.get("namespaces", {}).pop(a[2], None)
    save(state)
    sys.exit(0)
sys.exit(0)
'''

_HELM = _COMMON + r'''
argv, stdin = record("helm")
a = strip_kubeconfig(argv)
state = load()
if a[:1] == ["upgrade"] and state.get("break_forwards_on_helm"):
    for name in os.listdir(HERE):
        if name.startswith("forward-") and not name.endswith(".broken"):
            open(os.path.join(HERE, name + ".broken"), "w").close()
if a[:2] == ["upgrade", "--install"] or a[:1] == ["install"]:
    name = a[2] if a[0] == "upgrade" else a[1]
    labels = dict(kv.split("=", 1) for kv in (value(a, "--labels") or "").split(",") if kv)
    records = [s for s in state.get("helm_secrets", []) if s["name"] != name]
    state["helm_secrets"] = records + [{"name": name, "namespace": value(a, "--namespace"), "labels": labels}]
    save(state)
if a[:1] == ["uninstall"]:
    state["helm_secrets"] = [s for s in state.get("helm_secrets", []) if s["name"] != a[1]]
    save(state)
sys.exit(0)
'''

_KIND = _COMMON + r'''
argv, stdin = record("kind")
state = load()
if argv[:2] == ["get", "clusters"]:
    print("\n".join(state.get("kind_clusters", [])))
elif argv[:2] == ["create", "cluster"]:
    import yaml
    with open(value(argv, "--config")) as f:
        name = yaml.safe_load(f)["name"]
    kubeconfig = value(argv, "--kubeconfig")
    open(kubeconfig, "w").write("apiVersion: v1\nkind: Config\n")
    state.setdefault("kind_clusters", []).append(name)
    state["cluster_ready"] = True
    save(state)
elif argv[:2] == ["export", "kubeconfig"]:
    if value(argv, "--name") not in state.get("kind_clusters", []):
        print(f"ERROR: unknown cluster {value(argv, '--name')!r}", file=sys.stderr)
        sys.exit(1)
    open(value(argv, "--kubeconfig"), "w").write("apiVersion: v1\nkind: Config\n")
elif argv[:2] == ["delete", "cluster"]:
    name = value(argv, "--name")
    state["kind_clusters"] = [c for c in state.get("kind_clusters", []) if c != name]
    state["cluster_ready"] = False
    save(state)
sys.exit(0)
'''


_DOCKER = _COMMON + r'''
argv, stdin = record("docker")
state = load()
if argv[:2] == ["image", "inspect"]:
    sys.exit(0 if argv[2] in state.get("docker_images", []) else 1)
if argv[:1] == ["build"]:
    state.setdefault("docker_images", []).append(value(argv, "--tag"))
    save(state)
sys.exit(0)
'''


class FakeTools:
    """The fake executables in ``folder`` (put first on PATH by the test) and what they recorded."""

    def __init__(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name, body in (("kubectl", _KUBECTL), ("helm", _HELM), ("kind", _KIND), ("docker", _DOCKER)):
            path = folder / name
            path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
            path.chmod(0o755)
        self.state_path = folder / "state.json"
        self.state_path.write_text(json.dumps(state or {}))

    @property
    def path_env(self) -> str:
        return f"{self.folder}{os.pathsep}{os.environ.get('PATH', '')}"

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        path = self.folder / "calls.jsonl"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        return [c for c in calls if tool is None or c["tool"] == tool]

    def argvs(self, tool: str) -> list[list[str]]:
        """Recorded argv of ``tool`` (kubectl, helm: without the --kubeconfig flag and its value)."""
        if tool == "kind":
            return [call["argv"] for call in self.calls(tool)]
        out = []
        for call in self.calls(tool):
            argv, skip = [], False
            for arg in call["argv"]:
                if skip:
                    skip = False
                elif arg == "--kubeconfig":
                    skip = True
                else:
                    argv.append(arg)
            out.append(argv)
        return out

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_path.read_text()))

    def forward_pids(self) -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in self.folder.glob("forward-*") if p.suffix != ".broken")

    def kill_forwards(self) -> None:
        for pid in self.forward_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
