"""Each claim can fail: under a known misconfiguration its check must fail, and for the stated cause.

The matrix (fault, suite, expected, observed) is printed at the end of the run.
"""

import pytest

from otelgate.negative import CONTROLS, Control, ControlResult, run_control
from otelgate.stacks.base import Stack

pytestmark = [pytest.mark.negative, pytest.mark.stack]


@pytest.mark.parametrize("control", CONTROLS, ids=[c.fault for c in CONTROLS])
def test_fault_makes_its_suite_fail_for_the_stated_cause(
    warm_stack: Stack, control: Control, control_results: list[ControlResult]
) -> None:
    results = run_control(warm_stack, control)
    control_results.extend(results)
    wrong = [r for r in results if not r.ok]
    assert not wrong, "\n\n".join(f"{r.suite}: expected {r.expected}, observed {r.observed}\n{r.details}"
                                  for r in wrong)
