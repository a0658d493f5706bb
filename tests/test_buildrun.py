"""otelgate.buildrun: the one runner of long build commands (collector, control plane)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from otelgate import buildrun
from otelgate.buildrun import BuildCommandError, exclusive, run_followed


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _run(argv: list[str], tmp_path: Path, lines: list[str], **kwargs: object) -> buildrun.Followed:
    return run_followed(argv, cwd=tmp_path, env=dict(os.environ), progress=lines.append, label="t", what="the test",
                        **kwargs)  # type: ignore[arg-type]


def test_every_line_is_echoed_with_its_label_and_kept_in_the_tail(tmp_path: Path) -> None:
    lines: list[str] = []
    followed = _run(_python("import sys; print('one'); print('two', file=sys.stderr)"), tmp_path, lines, timeout=30)
    assert followed.returncode == 0 and followed.tail == ["one", "two"]
    assert all(line.startswith("[t] ") for line in lines) and lines[-1].endswith(" two")


def test_captured_stdout_is_returned_whole_and_only_stderr_is_followed(tmp_path: Path) -> None:
    lines: list[str] = []
    code = "import sys; print('{\"Dir\": \"x\"}'); print('progress', file=sys.stderr); sys.exit(3)"
    followed = _run(_python(code), tmp_path, lines, timeout=30, capture_stdout=True, check=False)
    assert followed.stdout.strip() == '{"Dir": "x"}'
    assert followed.tail == ["progress"] and followed.returncode == 3


def test_a_failing_command_names_itself_and_its_last_lines(tmp_path: Path) -> None:
    with pytest.raises(BuildCommandError, match=r"(?s)the test failed \(exit 2\).*boom"):
        _run(_python("import sys; print('boom'); sys.exit(2)"), tmp_path, [], timeout=30)


def test_a_quiet_command_gets_heartbeats_and_a_deadline_that_says_what_it_saw(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buildrun, "HEARTBEAT_S", 0.2)
    lines: list[str] = []
    code = "import time; print('started', flush=True); time.sleep(30)"
    with pytest.raises(BuildCommandError, match=r"(?s)timed out after 1s waiting for the test.*started"):
        _run(_python(code), tmp_path, lines, timeout=1.0)
    assert any("still running: the test" in line for line in lines)


def test_exclusive_creates_the_lock_file_and_releases_it(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with exclusive(lock):
        assert lock.exists()
    with exclusive(lock):  # released: taking it again does not block
        pass
