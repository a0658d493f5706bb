"""Prometheus text exposition (Kong's ``/metrics``, the collector's own metrics), read with prometheus_client's
parser: one reader for every place otelgate looks at a scrape, never a hand-written one."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    """Every sample (name, labels in line order, value) of an exposition; ``ValueError`` says what could not be
    parsed. The parser names a counter's samples ``<family>_total`` even where the text has no suffix (Kong's
    ``kong_bandwidth_bytes``): match names without ``_total``, as :func:`totals` does."""
    try:
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except (ValueError, TypeError, IndexError) as exc:  # the parser's errors on malformed lines
        raise ValueError(f"not Prometheus text exposition: {exc}") from None


def totals(text: str) -> dict[str, float]:
    """``{sample name without _total: sum over its series}``: how much of each counter, across all its labels."""
    result: dict[str, float] = {}
    for sample in samples(text):
        key = sample.name.removesuffix("_total")
        result[key] = result.get(key, 0.0) + float(sample.value)
    return result
