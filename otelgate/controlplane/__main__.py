"""``python -m otelgate.controlplane build|up|render-injection``: build the binaries (cached), run the control plane
until Ctrl-C, or have the real Operator render the Python injection into otelgate/demoapp (the checked-in copy)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from otelgate.controlplane import build, cluster, injection, objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otelgate.controlplane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build etcd, kube-apiserver and the Operator into the cache; print times and sizes")
    up = sub.add_parser("up", help="start the control plane and keep it running until Ctrl-C")
    up.add_argument("--workdir", type=Path, default=None, help="state and logs (default: a temporary folder)")
    sub.add_parser("render-injection", help=f"rewrite {injection.RENDERED_FILE.name} from the real Operator")
    args = parser.parse_args(argv)
    if args.command == "render-injection":
        return render_injection()
    if args.command == "build":
        began = time.monotonic()
        results = build.ensure_all(lambda line: print(line, file=sys.stderr, flush=True))
        for result in results.values():
            print(result.summary(), flush=True)
        print(f"total {time.monotonic() - began:.1f}s this run", flush=True)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="otelgate-controlplane-"))
    plane = cluster.start(workdir, lambda line: print(line, file=sys.stderr, flush=True))
    try:
        print(f"API server {plane.server}\nkubeconfig {workdir / 'kubeconfig.yaml'}\nlogs {workdir}", flush=True)
        while all(p.alive() for p in plane.processes):
            time.sleep(1.0)
        print("a control-plane process exited; see the logs", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        plane.stop()


def render_injection() -> int:
    with tempfile.TemporaryDirectory(prefix="otelgate-controlplane-") as tmp:
        plane = cluster.start(Path(tmp), lambda line: print(line, file=sys.stderr, flush=True))
        try:
            documents = objects.applied_documents()
            objects.apply_all(plane.kube, documents)
            deployment = objects.python_deployment(documents)
            pod = objects.admitted_pod(plane.kube, deployment)
            injection.write_rendering(injection.rendered_env(pod), {
                "deployment": deployment["metadata"]["name"], "namespace": deployment["metadata"]["namespace"],
                "pod": pod["metadata"]["name"]})
        finally:
            plane.stop()
    print(f"wrote {injection.RENDERED_FILE}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
