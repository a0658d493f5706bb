"""Reports otelgate writes for people: the sampling-rate report (``sampling``) and others."""
