"""The independent Kong sampler oracle (otelgate.expect.kong_sampler) is pinned by Kong's own test vectors and by
boundary ids, and the sampling claim's logic (expect.sampling.assert_decisions) rejects every wrong sampler."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest

from otelgate.expect import kong_sampler, sampling
from otelgate.expect.errors import ExpectationFailed, NotEnoughData

# Kong/kong@3.9.1 spec/03-plugins/37-opentelemetry/04-exporter_spec.lua:353-357 (again at :428-432):
# with sampling_rate 0.5, "this trace_id is always sampled" / "this trace_id is never sampled".
KONG_SPEC_RATE = 0.5
KONG_SPEC_SAMPLED = "92a54b3e1a7c4f2da9e44b8a6f3e1dab"
KONG_SPEC_NOT_SAMPLED = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_kong_spec_vectors() -> None:
    assert kong_sampler.kong_decides(KONG_SPEC_SAMPLED, KONG_SPEC_RATE)
    assert not kong_sampler.kong_decides(KONG_SPEC_NOT_SAMPLED, KONG_SPEC_RATE)
    # the vectors hold for parent-sampled requests too (the spec sends traceparent ...-01): the flag does not force
    assert kong_sampler.kong_decides(KONG_SPEC_SAMPLED, KONG_SPEC_RATE, parent_sampled=True)
    assert not kong_sampler.kong_decides(KONG_SPEC_NOT_SAMPLED, KONG_SPEC_RATE, parent_sampled=True)


@pytest.mark.parametrize("rate", [0.5, 0.1, 0.01, 0.999])
def test_boundary_ids_one_below_at_and_above_the_threshold(rate: float) -> None:
    ids = kong_sampler.boundary_ids(rate)
    assert kong_sampler.trace_id_head(ids["at"]) == int(rate * 2**64)
    assert kong_sampler.kong_decides(ids["below"], rate)
    assert not kong_sampler.kong_decides(ids["at"], rate)
    assert not kong_sampler.kong_decides(ids["above"], rate)


def test_threshold_is_truncated_like_luajit_uint64_conversion() -> None:
    # rate * 2^64 = 18.4467...: LuaJIT converts to uint64_t 18, so head 18 is NOT sampled (18 < 18.44 would say yes)
    rate = 1e-18
    assert kong_sampler.threshold(rate) == 18
    assert kong_sampler.kong_decides(kong_sampler.trace_id_for_head(17), rate)
    assert not kong_sampler.kong_decides(kong_sampler.trace_id_for_head(18), rate)


def test_edges_and_flags() -> None:
    top = kong_sampler.trace_id_for_head(2**64 - 1)
    assert kong_sampler.kong_decides(top, 1.0) and kong_sampler.kong_decides(top, 1.5)
    zero = kong_sampler.trace_id_for_head(0)
    assert not kong_sampler.kong_decides(zero, 0.0) and not kong_sampler.kong_decides(zero, -1)
    assert kong_sampler.kong_decides(zero, 1e-12)
    assert not kong_sampler.kong_decides(zero, 1.0, parent_sampled=False)  # an incoming "not sampled" wins


@pytest.mark.parametrize("bad", ["", "xyz", "4bf92f3577b34da6", "4BF92F3577B34DA6A3CE929D0E0E473G", None])
def test_bad_trace_ids_are_refused_clearly(bad: object) -> None:
    with pytest.raises(kong_sampler.BadTraceId):
        kong_sampler.kong_decides(bad, 0.5)  # type: ignore[arg-type]


def test_head_is_little_endian_bytes_zero_to_seven() -> None:
    trace_id = "0100000000000000" + "ff" * 8
    assert kong_sampler.trace_id_head(trace_id) == 1
    assert kong_sampler.trace_id_for_head(1, tail="ff" * 8) == trace_id


# --- sampler variants: each is rejected by the claim's logic on its recorded decisions -------------------------------

def _head(trace_id: str, offset: int, order: str) -> int:
    return int(struct.unpack(f"{order}Q", bytes.fromhex(trace_id)[offset:offset + 8])[0])


VARIANTS: dict[str, Callable[[str, float], bool]] = {
    "wrong bytes (8-15)": lambda tid, rate: _head(tid, 8, "<") < rate * 2**64,
    "wrong byte order (big-endian)": lambda tid, rate: _head(tid, 0, ">") < rate * 2**64,
    "inverted range (keeps the top fraction)": lambda tid, rate: _head(tid, 0, "<") >= (1 - rate) * 2**64,
    "threshold 10% high": lambda tid, rate: _head(tid, 0, "<") < rate * 1.1 * 2**64,
    "threshold 10% low": lambda tid, rate: _head(tid, 0, "<") < rate * 0.9 * 2**64,
}


def kong_generated_ids(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    return [f"{generator.getrandbits(128):032x}" for _ in range(count)]


def recorded(sampler: Callable[[str, float], bool], trace_ids: list[str], rate: float) -> list[sampling.Decision]:
    return [sampling.Decision(f"r{i}", tid, sampler(tid, rate), parent_sampled=True) for i, tid in enumerate(trace_ids)]


def correct(tid: str, rate: float) -> bool:
    return kong_sampler.kong_decides(tid, rate)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_claim_passes_kong_s_own_decisions(rate: float) -> None:
    for ids in (kong_generated_ids(200, 1), sampling.stratified_trace_ids(200, 2)):
        report = sampling.assert_decisions(recorded(correct, ids, rate), rate)
        assert report.traced == report.expected_traced
    stratified = sampling.stratified_trace_ids(200, 3)
    report = sampling.assert_decisions(recorded(correct, stratified, rate), rate,
                                       expected_count=sampling.stratified_count(200, rate))
    assert report.traced == round(rate * 200)  # exact (±0): (i + 0.5) / 200 < rate for exactly rate * 200 ids


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_every_sampler_variant_is_rejected_with_evidence(variant: str, rate: float) -> None:
    """The suite's crafted set (200 stratified ids) catches each variant at each rate, deterministically."""
    ids = sampling.stratified_trace_ids(200, 20261126)
    with pytest.raises(ExpectationFailed) as err:
        sampling.assert_decisions(recorded(VARIANTS[variant], ids, rate), rate)
    failure = err.value
    assert failure.cause == "SAMPLING_DECISION"
    assert failure.evidence.facts["rate"] == rate and failure.evidence.facts["mismatches"] > 0
    first = failure.evidence.facts["first_mismatched_trace_ids"][0]
    assert first in failure.details and "Kong's rule says" in failure.details


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "threshold" not in v])
def test_kong_generated_ids_catch_the_gross_variants_at_both_rates(variant: str) -> None:
    ids = kong_generated_ids(200, 20261127)
    for rate in (0.1, 0.5):
        with pytest.raises(ExpectationFailed):
            sampling.assert_decisions(recorded(VARIANTS[variant], ids, rate), rate)


def test_the_claim_refuses_no_data() -> None:
    with pytest.raises(NotEnoughData):
        sampling.assert_decisions([], 0.5)


def test_stratified_count_is_exact() -> None:
    for rate in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
        ids = sampling.stratified_trace_ids(200, 7)
        assert sum(kong_sampler.kong_decides(t, rate) for t in ids) == sampling.stratified_count(200, rate)
        assert sampling.stratified_count(200, rate) == round(rate * 200)
