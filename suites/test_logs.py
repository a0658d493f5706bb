"""Claim 3: Kong's access logs carry a clean trace_id (32 lowercase hex, no {"w3c": ...} wrapper) that joins a
stored trace."""

import pytest

from otelgate import claims
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.logs, pytest.mark.stack]


def test_every_access_log_has_a_clean_trace_id_that_joins_its_trace(warm_stack: Stack) -> None:
    records = claims.check_access_logs(warm_stack, requests=10)
    assert len(records) == 10
