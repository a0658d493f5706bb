"""Root conftest of the otelgate repository: this repository's own fixtures (``fixtures/``).

otelgate's pytest plugin (``--stack``, the ``stack`` fixture, …) is not loaded here: the installed package registers
it through its ``pytest11`` entry point (``otelgate.pytest_plugin``), as it does in any project that installs otelgate.
"""

pytest_plugins = ["fixtures.checkout"]
