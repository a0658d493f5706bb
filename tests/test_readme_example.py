"""The README's assertion-library example runs as written against a running stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from otelgate import claims
from otelgate.stacks.base import Stack

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.stack


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    return str(blocks[0])


def test_the_readme_example_passes_on_the_local_stack(stack: Stack) -> None:
    stack.sink.reset()  # the example checks everything in the sink; start from this test's data only
    claims.warm_up(stack)
    traffic = claims.send(stack.gateway_url, claims.TRACES_ROUTE.path)
    claims.require_ok(traffic, 1)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    namespace["check_my_gateway"](stack.sink.base_url, traffic.request_ids[0])  # type: ignore[operator]
