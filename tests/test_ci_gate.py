"""The everyday gate: .ci/run and the GitHub workflow run lint and the tests; the workflow caches the builds and
keeps artifacts/ of a failed run; README's set-up commands stay the two a newcomer types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from otelgate import paths

assert paths.CHECKOUT is not None
ROOT: Path = paths.CHECKOUT


def commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_ci_run_runs_lint_then_the_tests() -> None:
    lines = commands((ROOT / ".ci" / "run").read_text())
    assert lines.index("nox -s lint") < lines.index("nox -s tests")


def workflow() -> dict[str, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def test_the_workflow_runs_on_push_and_pull_request_what_ci_run_runs() -> None:
    flow = workflow()
    assert {"push", "pull_request"} <= set(flow[True])  # YAML 1.1 reads the key `on` as True
    steps = [s for job in flow["jobs"].values() for s in job["steps"]]
    runs = [s.get("run", "") for s in steps]
    assert "nox -s lint" in runs and "nox -s tests" in runs
    assert runs.index("nox -s lint") < runs.index("nox -s tests")


def test_the_workflow_caches_the_builds_keyed_by_what_pins_them() -> None:
    caches = {s["with"]["path"]: s["with"]["key"] for job in workflow()["jobs"].values() for s in job["steps"]
              if str(s.get("uses", "")).startswith("actions/cache@")}
    assert "collector/builder-config.yaml" in caches["~/.cache/otelgate"]
    assert "otelgate/deck.py" in caches["~/.cache/otelgate"]
    assert "collector/builder-config.yaml" in caches["~/go/pkg/mod"]
    for pinned in ("collector/builder-config.yaml", "otelgate/deck.py"):
        assert (ROOT / pinned).is_file(), f"the cache key names {pinned}, which does not exist"


def test_the_workflow_uploads_artifacts_when_it_fails() -> None:
    uploads = [s for job in workflow()["jobs"].values() for s in job["steps"]
               if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert any(s.get("if") == "failure()" and s["with"]["path"].rstrip("/") == "artifacts" for s in uploads)


def test_readme_set_up_is_still_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    set_up = readme.split("## Set-up on a fresh machine", 1)[1].split("\n\n", 2)[1]
    assert next(line.split("#")[0].strip() for line in set_up.splitlines()) == "python -m pip install nox"
    assert "nox -s tests" in set_up
