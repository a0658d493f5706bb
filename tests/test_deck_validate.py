"""`deck file validate manifests/kong/kong.yaml` with real decK (built from the Go module proxy into
~/.cache/otelgate/deck/<version>/, or OTELGATE_DECK / `deck` on PATH).

When decK cannot be obtained the tests SKIP with the reason (on otelgate's own CI machine the Go module proxy refuses
every github.com/kong/* module: `403 Forbidden`), unless OTELGATE_REQUIRE_DECK=1 makes that a failure. `otelgate lint`
covers kong.yaml's cross-references either way (tests/test_manifests_lint.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from otelgate.lint import DeckUnavailable, deck_file_validate, find_deck

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


def test_kong_yaml_passes_deck_file_validate(deck: Path) -> None:
    result = deck_file_validate(KONG_YAML, deck)
    assert result.returncode == 0, f"deck file validate rejected kong.yaml:\n{result.stdout}\n{result.stderr}"


def test_deck_file_validate_rejects_a_broken_copy(deck: Path, tmp_path: Path) -> None:
    # proves the check above can fail: a route pointing at a service that does not exist
    doc = yaml.safe_load(KONG_YAML.read_text())
    doc["routes"] = [{"name": "orphan", "paths": ["/orphan"], "service": {"name": "no-such-service"}}]
    broken = tmp_path / "kong.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = deck_file_validate(broken, deck)
    assert result.returncode != 0, f"deck accepted a route to a missing service:\n{result.stdout}"


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
