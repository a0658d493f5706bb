"""Mutation testing of the observability config: how many plausible misconfigurations does the gate catch?

:mod:`.operators` (named single mutations), :mod:`.catalog` (every mutant of a manifests folder), :mod:`.runner`
(lint, then the claims on the local stack), :mod:`.report` (json, md, html), :mod:`.cli` (``otelgate mutate``).
"""
