"""`deck file validate manifests/kong/kong.yaml` with real decK (built from the Go module proxy into
~/.cache/otelgate/deck/<version>+<overrides>/, or OTELGATE_DECK / `deck` on PATH).

The build is decK v1.64.0 with vacuum v0.29.7 / doctor v0.0.78 (see ``otelgate.deck.DECK_REQUIRE_OVERRIDES``: the
proxy refuses doctor v0.0.72). The first run builds it (about 5 minutes on 2 cores), later runs use the cache. When
decK cannot be obtained the tests SKIP with the reason, unless OTELGATE_REQUIRE_DECK=1 makes that a failure.
`otelgate lint` covers kong.yaml's cross-references either way (tests/test_manifests_lint.py).

What offline `deck file validate` checks (and so what these tests can show): parsing, the entity structure against
decK's JSON schema (unknown fields, wrong types), references between entities and duplicates. It does not check a
plugin's `config` (an open object in that schema) nor `_format_version`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelgate.deck import DECK_VERSION, DeckUnavailable, deck_cache_dir, deck_file_validate, find_deck

REPO = Path(__file__).resolve().parents[1]
KONG_YAML = REPO / "manifests" / "kong" / "kong.yaml"


@pytest.fixture(scope="module")
def deck() -> Path:
    try:
        return find_deck(build_if_missing=True)
    except DeckUnavailable as exc:
        if os.environ.get("OTELGATE_REQUIRE_DECK") == "1":
            pytest.fail(f"decK is required here (OTELGATE_REQUIRE_DECK=1): {exc}")
        pytest.skip(f"decK unavailable: {exc}")


def _kong_config() -> dict[str, Any]:
    doc = yaml.safe_load(KONG_YAML.read_text())
    assert isinstance(doc, dict)
    return doc


def _validate_copy(deck: Path, tmp_path: Path, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / "kong.yaml"
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return deck_file_validate(copy, deck)


def test_kong_yaml_passes_deck_file_validate(deck: Path) -> None:
    result = deck_file_validate(KONG_YAML, deck)
    assert result.returncode == 0, f"deck file validate rejected kong.yaml:\n{result.stdout}\n{result.stderr}"


def test_the_built_deck_is_the_pinned_version(deck: Path) -> None:
    if deck != deck_cache_dir() / "deck":
        pytest.skip(f"using a decK that otelgate did not build: {deck}")
    result = subprocess.run([str(deck), "--analytics=false", "version"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.stdout.startswith(f"decK {DECK_VERSION} ("), result.stdout + result.stderr


def test_deck_file_validate_rejects_a_route_to_a_missing_service(deck: Path, tmp_path: Path) -> None:
    doc = _kong_config()
    doc["routes"] = [{"name": "orphan", "paths": ["/orphan"], "service": {"name": "no-such-service"}}]
    result = _validate_copy(deck, tmp_path, doc)
    assert result.returncode != 0, f"deck accepted a route to a missing service:\n{result.stdout}"
    assert "no-such-service" in result.stderr


@pytest.mark.parametrize(("breakage", "expected"), [
    ("service_port_is_a_string", "services.0.port: Invalid type. Expected: integer, given: string"),
    ("route_has_an_unknown_field", "services.1.routes.0: Additional property strip_paths is not allowed"),
    ("plugin_enabled_is_a_string", "plugins.2.enabled: Invalid type. Expected: boolean, given: string"),
])
def test_deck_file_validate_rejects_a_wrong_type_or_field(deck: Path, tmp_path: Path, breakage: str,
                                                           expected: str) -> None:
    doc = _kong_config()
    if breakage == "service_port_is_a_string":
        doc["services"][0]["port"] = "eighty"
    elif breakage == "route_has_an_unknown_field":
        doc["services"][1]["routes"][0]["strip_paths"] = False   # a typo of strip_path
    else:
        assert doc["plugins"][2]["name"] == "tcp-log"
        doc["plugins"][2]["enabled"] = "yes"
    result = _validate_copy(deck, tmp_path, doc)
    assert result.returncode != 0, f"deck accepted {breakage}:\n{result.stdout}"
    assert expected in result.stderr, result.stderr


def test_offline_validate_leaves_plugin_config_unchecked(deck: Path, tmp_path: Path) -> None:
    # Pins down the limit the README states: offline decK does not know plugin schemas, so a wrong
    # opentelemetry option passes here; only `deck gateway validate` against a running Kong (or Kong itself) sees it.
    doc = _kong_config()
    assert doc["plugins"][0]["name"] == "opentelemetry"
    doc["plugins"][0]["config"]["traces_endpointz"] = doc["plugins"][0]["config"].pop("traces_endpoint")
    result = _validate_copy(deck, tmp_path, doc)
    assert result.returncode == 0, result.stderr


def test_find_deck_prefers_an_explicit_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "deck"
    fake.write_text("#!/bin/sh\necho deck\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OTELGATE_DECK", str(fake))
    assert find_deck() == fake
    monkeypatch.setenv("OTELGATE_DECK", str(tmp_path / "missing"))
    with pytest.raises(DeckUnavailable, match="not a file"):
        find_deck()


def test_deck_unavailable_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OTELGATE_DECK", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeckUnavailable, match="installation"):
        find_deck(build_if_missing=False)
    assert shutil.which("deck") is None
