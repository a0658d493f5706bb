"""Finding and building the collector distribution; what the built binary contains and how it names things."""

from __future__ import annotations

import argparse
import importlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from otelgate.collector import CollectorNotFound, build, deprecated_aliases, find_collector
from otelgate.collector import cli as collector_cli
from otelgate.collector.testing import collector_binary_or_skip, running_collector
from otelgate.sink.server import SinkServer
from otelgate.sink.testing import fake_token

# the package re-exports the function build(), which shadows the submodule's name as an attribute
build_mod = importlib.import_module("otelgate.collector.build")
MANIFEST = build_mod.DEFAULT_MANIFEST


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OTELGATE_COLLECTOR, an empty cache, an empty PATH: the lookup sees only what a test puts there."""
    monkeypatch.delenv("OTELGATE_COLLECTOR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def test_lookup_order_env_then_cache_then_path(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _executable(isolated / "bin" / "otelcol-contrib")
    assert find_collector() == on_path
    cached = _executable(build_mod.cache_dir() / build_mod.distribution_name(build_mod.load_manifest()))
    assert find_collector() == cached
    explicit = _executable(isolated / "elsewhere" / "my-otelcol")
    monkeypatch.setenv("OTELGATE_COLLECTOR", str(explicit))
    assert find_collector() == explicit


def test_a_wrong_otelgate_collector_is_an_error_not_a_fallback(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _executable(isolated / "bin" / "otelcol-contrib")
    monkeypatch.setenv("OTELGATE_COLLECTOR", str(isolated / "missing"))
    with pytest.raises(CollectorNotFound, match=r"OTELGATE_COLLECTOR=.*not an executable"):
        find_collector()


def test_no_go_and_no_binary_says_how_to_get_one(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "find_go", lambda: None)
    with pytest.raises(CollectorNotFound) as found:
        find_collector(build_if_missing=True)
    message = str(found.value)
    assert "Go is not installed" in message
    assert "nox -s collector" in message and "OTELGATE_COLLECTOR" in message and "otelcol-contrib" in message
    with pytest.raises(CollectorNotFound, match="Go is not installed"):
        build(progress=lambda _line: None)


def test_cache_is_keyed_by_the_manifest_content(isolated: Path) -> None:
    copy = isolated / "builder-config.yaml"
    copy.write_text(MANIFEST.read_text())
    assert build_mod.cache_dir(copy) == build_mod.cache_dir(MANIFEST)
    copy.write_text(MANIFEST.read_text() + "\n# a change\n")
    assert build_mod.cache_dir(copy) != build_mod.cache_dir(MANIFEST)


def test_a_cached_build_is_reused_without_go(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "find_go", lambda: None)  # any build attempt would raise
    cached = _executable(build_mod.cache_dir() / build_mod.distribution_name(build_mod.load_manifest()))
    lines: list[str] = []
    result = build(progress=lines.append)
    assert (result.path, result.cached, result.size_bytes) == (cached, True, cached.stat().st_size)


def test_the_builder_version_is_the_manifests_core_release() -> None:
    manifest = build_mod.load_manifest()
    assert build_mod.builder_version(manifest) == "v0.161.0"
    versions = {gomod.split()[1] for gomod in build_mod.manifest_gomods(manifest)}
    assert versions == {"v0.161.0"}, "every component of the distribution at one release"


def test_cli_ensure_fails_only_where_a_collector_is_required(isolated: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(build_mod, "find_go", lambda: None)
    args = argparse.Namespace(build=False, ensure=True, path=False, components=False, force=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("OTELGATE_REQUIRE_COLLECTOR", raising=False)
    assert collector_cli.run(args) == 0
    assert "WARNING" in capsys.readouterr().err
    monkeypatch.setenv("OTELGATE_REQUIRE_COLLECTOR", "1")
    assert collector_cli.run(args) == 1
    assert "ERROR" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ real binary
@pytest.mark.collector
def test_components_lists_every_component_of_the_manifest() -> None:
    binary = collector_binary_or_skip()
    out = subprocess.run([str(binary), "components"], capture_output=True, text=True, timeout=60, check=True).stdout
    listed = yaml.safe_load(out)
    modules = {entry["module"] for kind in ("receivers", "processors", "exporters", "extensions", "providers")
               for entry in listed.get(kind) or []}
    manifest = build_mod.load_manifest()
    wanted = set(build_mod.manifest_gomods(manifest, ("receivers", "processors", "exporters", "extensions",
                                                      "providers")))
    assert wanted <= modules, f"missing from the binary: {sorted(wanted - modules)}"
    names = {kind: {entry["name"] for entry in listed[kind]} for kind in ("receivers", "processors", "exporters")}
    assert names["receivers"] >= {"otlp", "tcp_log", "prometheus"}
    assert names["processors"] >= {"batch", "memory_limiter", "attributes", "cumulative_to_delta", "transform",
                                   "metric_start_time"}
    assert names["exporters"] >= {"otlp_http", "prometheus", "debug"}
    assert {entry["name"] for entry in listed["extensions"]} >= {"health_check"}


@pytest.mark.collector
def test_the_resource_uses_no_deprecated_component_name(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Run the deployed config and read the log: the collector warns `"<old>" alias is deprecated` for old names."""
    binary = collector_binary_or_skip()
    token = fake_token()
    with SinkServer(profile="dynatrace", token=token) as sink, \
            running_collector(binary, tmp_path, sink_endpoint=sink.otlp_endpoint, token=token,
                              request=request) as collector:
        log = collector.process.log_text()
    assert "Everything is ready" in log
    assert deprecated_aliases(log) == []
    assert [line for line in log.splitlines() if "deprecated" in line.lower()] == []


def test_deprecated_alias_warnings_are_recognised() -> None:
    line = ('2026-01-01T00:00:00Z\twarn\tbuilders/builders.go:40\t"tcplog" alias is deprecated; use "tcp_log" '
            'instead\t{}')
    assert deprecated_aliases(line) == [("tcplog", "tcp_log")]


def test_cli_path_prints_the_binary(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = _executable(isolated / "bin" / "otelcol-contrib")
    args = argparse.Namespace(build=False, ensure=False, path=True, components=False, force=False)
    assert collector_cli.run(args) == 0
    assert capsys.readouterr().out.strip() == str(binary)
    assert os.access(binary, os.X_OK)
