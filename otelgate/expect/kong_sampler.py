"""Kong 3.9's sampling decision, as Kong documents it: the oracle the sampling claim judges every request by.

Written from Kong's source, sharing nothing with :mod:`otelgate.kongsim` (the simulator it judges):

- Kong/kong@3.9.1 kong/pdk/tracing.lua:41-44 and 66-96 (``get_trace_id_based_sampler``): a rate >= 1 always
  samples, a rate <= 0 never does; otherwise the first ``SAMPLING_BYTE = 8`` bytes of the raw trace id are cast to a
  ``uint64_t`` (``ffi_cast("uint64_t*", ...)[0]``: the machine's byte order, little-endian on x86-64 and arm64) and
  the trace is sampled iff that number is below ``bound = sampling_rate * 2^64``.
- LuaJIT compares a ``uint64_t`` cdata with a Lua number by converting the number to ``uint64_t`` (truncation)
  (https://luajit.org/ext_ffi_semantics.html, "Comparisons"): the threshold is ``floor(rate * 2^64)``. The product is
  exact in binary floating point (scaling by a power of two), so it is computed here the same way.
- Kong/kong@3.9.1 kong/pdk/tracing.lua:601-632 (``get_sampling_decision``): the plugin's ``sampling_rate`` wins
  over kong.conf ``tracing_sampling_rate``; an incoming not-sampled flag yields "not sampled" without the ratio
  sampler; an incoming sampled flag does NOT force sampling (the ratio sampler still runs on the trace id).

Pinned by Kong's own test vectors (tests/test_kong_sampler_oracle.py): Kong/kong@3.9.1
spec/03-plugins/37-opentelemetry/04-exporter_spec.lua:353-357 (rate 0.5: ``92a54b3e…`` always sampled,
``4bf92f35…`` never), plus boundary ids one below, at and one above the threshold.
"""

from __future__ import annotations

import math
import struct

TRACE_ID_HEX_LENGTH = 32          # W3C trace ids: 16 bytes
HEAD_BYTES = 8                    # kong/pdk/tracing.lua:41 SAMPLING_BYTE
HEAD_RANGE = 1 << 64              # kong/pdk/tracing.lua:43 BOUND_MAX = 2^64


class BadTraceId(ValueError):
    """Not a 32-hex-digit trace id."""


def _raw(trace_id_hex: str) -> bytes:
    if not isinstance(trace_id_hex, str) or len(trace_id_hex) != TRACE_ID_HEX_LENGTH:
        raise BadTraceId(f"a trace id is {TRACE_ID_HEX_LENGTH} hex digits, got {trace_id_hex!r}")
    try:
        return bytes.fromhex(trace_id_hex)
    except ValueError:
        raise BadTraceId(f"trace id {trace_id_hex!r} is not hexadecimal") from None


def trace_id_head(trace_id_hex: str) -> int:
    """The number Kong compares: bytes 0-7 of the trace id as a little-endian unsigned 64-bit integer."""
    (head,) = struct.unpack("<Q", _raw(trace_id_hex)[:HEAD_BYTES])
    return int(head)


def threshold(rate: float) -> int:
    """Heads below this are sampled at ``rate`` in (0, 1): ``uint64_t(rate * 2^64)``."""
    if not isinstance(rate, int | float) or math.isnan(rate):
        raise ValueError(f"a sampling rate is a number, got {rate!r}")
    return int(float(rate) * float(HEAD_RANGE))  # int() truncates toward zero, as the uint64_t conversion does


def kong_decides(trace_id_hex: str, rate: float, parent_sampled: bool | None = None) -> bool:
    """Whether Kong samples the trace ``trace_id_hex`` at the rate in force (plugin ``sampling_rate`` if set,
    else ``tracing_sampling_rate``); ``parent_sampled`` is the incoming context's flag (None when absent)."""
    head = trace_id_head(trace_id_hex)  # validate the id even where the rate alone decides
    if parent_sampled is False:
        return False
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    return head < threshold(rate)


def trace_id_for_head(head: int, tail: str = "0123456789abcdef") -> str:
    """A trace id whose head (the number Kong compares) is ``head``; ``tail`` is the id's last 16 hex digits."""
    if not 0 <= head < HEAD_RANGE:
        raise ValueError(f"a head is an unsigned 64-bit number, got {head}")
    trace_id = struct.pack("<Q", head).hex() + tail
    _raw(trace_id)
    return trace_id


def head_fraction(trace_id_hex: str) -> float:
    """Where the id lies in Kong's sampling range [0, 1): sampled at every rate above this."""
    return trace_id_head(trace_id_hex) / HEAD_RANGE


def boundary_ids(rate: float) -> dict[str, str]:
    """Ids whose head is one below, at, and one above ``rate``'s threshold (sampled, not, not)."""
    bound = threshold(rate)
    if not 1 <= bound < HEAD_RANGE - 1:
        raise ValueError(f"rate {rate} has no ids on both sides of its threshold")
    return {"below": trace_id_for_head(bound - 1), "at": trace_id_for_head(bound),
            "above": trace_id_for_head(bound + 1)}
