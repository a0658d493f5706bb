"""Reports otelgate writes for people: the sampling-rate report (``sampling``), failure artifacts (``artifacts``,
``html``, ``pytest_plugin``) and offline replay of a saved dump (``replay``)."""
