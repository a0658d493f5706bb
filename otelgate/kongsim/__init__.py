"""otelgate's Kong 3.9 simulator: a TEST DOUBLE of Kong for the local stack only.

It loads the cluster's ``manifests/kong/kong.yaml`` and imitates what Kong 3.9 emits for it (spans, Prometheus
exposition, tcp-log lines), pinned to ``docs/reference/kong-3.9.md``. It is not Kong: anything it
produces is evidence about otelgate's pipeline and checks, never about real Kong. The kind and docker stacks run
real Kong with the same file.
"""

from otelgate.kongsim.server import Listeners, Simulator, SimulatorThread

__all__ = ["Listeners", "Simulator", "SimulatorThread"]
