"""Only what pyproject.toml cannot say: the package list, so that the demo deployment ships inside the wheel.

The repository keeps ``manifests/`` and ``collector/`` at its root (that is where people look for them); the wheel
carries them as ``otelgate/bundled/manifests`` and ``otelgate/bundled/collector``, where :mod:`otelgate.paths` finds
them outside a checkout. Everything else is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

BUNDLED = {"otelgate.bundled.manifests": "manifests", "otelgate.bundled.collector": "collector"}

setup(
    packages=[*find_packages(include=["otelgate", "otelgate.*"]), *BUNDLED],
    package_dir=BUNDLED,
    package_data={
        "otelgate": ["py.typed", "**/*.yaml", "**/*.lua", "**/*.html"],
        "otelgate.bundled.manifests": ["**/*"],
        "otelgate.bundled.collector": ["builder-config.yaml"],
    },
)
