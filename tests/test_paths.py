"""otelgate.paths is the one place that knows where files are: which manifests folder is in force, and no other
module finds the repository (or anything outside the ``otelgate`` package) from its own ``__file__``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from otelgate import paths


def test_the_folder_in_force_is_the_argument_then_the_environment_then_the_bundled_demo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.MANIFESTS_ENV, raising=False)
    assert paths.manifests_dir() == paths.DEFAULT_MANIFESTS.resolve()
    assert (paths.DEFAULT_MANIFESTS / "kong" / "kong.yaml").is_file()
    monkeypatch.setenv(paths.MANIFESTS_ENV, str(tmp_path))
    assert paths.manifests_dir() == tmp_path.resolve()
    assert paths.manifest("kong/kong.yaml") == tmp_path.resolve() / "kong" / "kong.yaml"
    other = tmp_path / "other"
    assert paths.manifests_dir(other) == other.resolve()


def test_use_manifests_sets_and_restores_and_refuses_a_missing_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.MANIFESTS_ENV, raising=False)
    previous = paths.use_manifests(tmp_path)
    assert previous is None and paths.manifests_dir() == tmp_path.resolve()
    with pytest.raises(paths.ManifestsError, match="not a folder"):
        paths.use_manifests(tmp_path / "missing")
    assert paths.manifests_dir() == tmp_path.resolve()  # a refused folder changes nothing
    paths.use_manifests(previous)
    assert paths.manifests_dir() == paths.DEFAULT_MANIFESTS.resolve()


def test_in_a_checkout_the_bundled_demo_is_the_repositorys_own_folders() -> None:
    assert paths.CHECKOUT is not None and (paths.CHECKOUT / "pyproject.toml").is_file()
    assert paths.DEFAULT_MANIFESTS == paths.CHECKOUT / "manifests"
    assert paths.collector_manifest() == paths.CHECKOUT / "collector" / "builder-config.yaml"


PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?(\.parents\[(\d+)\]|(?:\.parent)+)")


def test_no_module_finds_files_outside_the_package_from_its_own_location() -> None:
    assert paths.CHECKOUT is not None
    package = paths.CHECKOUT / "otelgate"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "paths.py" and path.parent == package:
            continue
        depth = len(path.relative_to(package).parts) - 1  # parents[depth] is the otelgate folder itself
        for found in PARENTS.finditer(path.read_text()):
            up = int(found[2]) if found[2] is not None else found[1].count(".parent") - 1
            if up > depth:
                offenders.append(f"{path.relative_to(paths.CHECKOUT)}: {found[0]}")
    assert not offenders, "locate these through otelgate.paths:\n" + "\n".join(offenders)


@pytest.mark.parametrize(("text", "depth", "bad"), [
    ("Path(__file__).resolve().parents[2]", 1, True),
    ("Path(__file__).resolve().parents[1]", 1, False),
    ("Path(__file__).parent.parent", 0, True),
    ("Path(__file__).parent", 0, False),
])
def test_the_location_check_can_fail(text: str, depth: int, bad: bool) -> None:
    found = PARENTS.search(text)
    assert found is not None
    up = int(found[2]) if found[2] is not None else found[1].count(".parent") - 1
    assert (up > depth) is bad
