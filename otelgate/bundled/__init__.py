"""The demo deployment otelgate ships as its default: ``manifests/`` and ``collector/builder-config.yaml``.

Built wheels carry them here (``setup.py`` maps the repository's root folders onto ``otelgate.bundled.manifests`` and
``otelgate.bundled.collector``); in a checkout this folder holds only this file and :mod:`otelgate.paths` reads the
root folders. Read them through :mod:`otelgate.paths`, never by a path of your own.
"""
