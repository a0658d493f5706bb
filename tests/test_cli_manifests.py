"""`--manifests DIR` points the commands at a team's own deployment (and `otelgate collector --builder-config FILE`
at its own distribution manifest); a folder that does not exist is one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from otelgate import paths
from otelgate.collector.build import manifest_hash


def otelgate(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {paths.MANIFESTS_ENV, "OTELGATE_COLLECTOR"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "otelcol" not in p)
    return subprocess.run([sys.executable, "-m", "otelgate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_up_dry_run_reads_the_given_manifests(manifests_copy: Path, tmp_path: Path) -> None:
    done = otelgate("up", "--stack", "local", "--dry-run", "--manifests", manifests_copy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{manifests_copy}/otel/collector.yaml" in done.stdout
    assert f"{manifests_copy}/kong/kong.yaml" in done.stdout
    assert str(paths.DEFAULT_MANIFESTS) not in done.stdout


def test_lint_checks_the_given_manifests(manifests_copy: Path, tmp_path: Path) -> None:
    kong = manifests_copy / "kong" / "kong.yaml"
    kong.write_text(kong.read_text().replace("name: tcp-log", "name: tcp-log-renamed"))
    done = otelgate("lint", "--manifests", manifests_copy, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 finding(s)" not in done.stdout


def test_a_missing_manifests_folder_is_one_line(tmp_path: Path) -> None:
    for command in (["up", "--stack", "local", "--dry-run"], ["lint"]):
        done = otelgate(*command, "--manifests", tmp_path / "nope", cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.strip() == f"otelgate {command[0]}: --manifests {tmp_path / 'nope'}: not a folder"


def test_collector_uses_the_given_builder_config(tmp_path: Path) -> None:
    own = tmp_path / "builder-config.yaml"
    own.write_text(paths.collector_manifest().read_text() + "\n# a team's own distribution\n")
    done = otelgate("collector", "--path", "--builder-config", own, cwd=tmp_path)
    assert done.returncode == 1  # never built: the message names the cache folder of this file's hash
    assert manifest_hash(own) in done.stderr and manifest_hash(own) != manifest_hash(paths.collector_manifest())
    missing = otelgate("collector", "--path", "--builder-config", tmp_path / "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr
