"""decK (Kong's declarative-config tool), built from the Go module proxy and cached, for ``deck file validate`` of
``kong.yaml``: what otelgate's own checks of Kong's config are measured against.

``otelgate lint --ensure-deck`` finds or builds it (``nox -s tests`` does that before pytest); see docs/kind.md for
which decK release builds from the proxy and why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DECK_MODULE = "github.com/kong/deck"
DECK_VERSION = "v1.64.0"
# Module versions that override what decK's go.mod requires, per decK version. The Go module proxy that otelgate's
# machines reach refuses github.com/pb33f/doctor v0.0.72 (403 on .mod and .zip), which v1.64.0 needs through
# github.com/daveshanley/vacuum v0.29.2 (`deck file lint`). vacuum v0.29.7 with doctor v0.0.78 is the pair decK
# v1.65.1 ships with, and v1.65.1's lint code is the same as v1.64.0's. v1.65.1 itself cannot be used: it needs
# github.com/Kong/ai-deck-converter, which the proxy refuses as well; v1.62.1 needs go-kong v0.75.1 (zip refused), and
# the other releases tried (v1.63.0, v1.62.0, v1.61.0, v1.60.0, v1.59.1, v1.58.0, v1.57.3, v1.56.0, v1.50.0,
# v1.49.2, v1.45.0, v1.40.0, v1.39.6) are not served at all.
DECK_REQUIRE_OVERRIDES: dict[str, dict[str, str]] = {
    "v1.64.0": {"github.com/daveshanley/vacuum": "v0.29.7", "github.com/pb33f/doctor": "v0.0.78"},
}


class DeckUnavailable(RuntimeError):
    """decK could not be found or built; the message says why and how to provide it."""


def deck_build_name(version: str = DECK_VERSION) -> str:
    """The version plus any dependency overrides, e.g. ``v1.64.0+vacuum-v0.29.7+doctor-v0.0.78``."""
    overrides = DECK_REQUIRE_OVERRIDES.get(version, {})
    return "+".join([version, *(f"{module.rsplit('/', 1)[-1]}-{v}" for module, v in overrides.items())])


def deck_cache_dir(version: str = DECK_VERSION) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "otelgate" / "deck" / deck_build_name(version)


def find_deck(*, build_if_missing: bool = False, version: str = DECK_VERSION, timeout: float = 1500.0) -> Path:
    """``OTELGATE_DECK``, then the cache, then ``deck`` on PATH; else (optionally) build it from the Go module proxy.

    decK's go.mod has ``replace`` directives, so ``go install module@version`` refuses it; the build downloads the
    module with ``go mod download`` and runs ``go build`` inside a copy of it, which honours the replaces, after
    raising the module versions in :data:`DECK_REQUIRE_OVERRIDES` (ones the proxy refuses at decK's pins)."""
    explicit = os.environ.get("OTELGATE_DECK")
    if explicit:
        if not Path(explicit).is_file():
            raise DeckUnavailable(f"OTELGATE_DECK={explicit} is not a file")
        return Path(explicit)
    cached = deck_cache_dir(version) / "deck"
    if cached.is_file():
        return cached
    on_path = shutil.which("deck")
    if on_path:
        return Path(on_path)
    if not build_if_missing:
        raise DeckUnavailable("decK not found (OTELGATE_DECK, the cache, PATH); build it with "
                              "find_deck(build_if_missing=True) or install it: "
                              "https://docs.konghq.com/deck/latest/installation/")
    return build_deck(version, timeout=timeout)


def build_deck(version: str = DECK_VERSION, *, timeout: float = 1500.0) -> Path:
    """Build decK into the cache (one build at a time across processes: a file lock)."""
    import fcntl

    go = shutil.which("go")
    if go is None:
        raise DeckUnavailable("building decK needs Go (https://go.dev/dl/); or set OTELGATE_DECK to a deck binary")
    target = deck_cache_dir(version)
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "deck").is_file():  # built by another process while this one waited
            return target / "deck"
        return _build_deck_locked(go, version, target, timeout)


def _progress(began: float, text: str) -> None:
    """A build takes minutes cold: say which phase it is in (stderr, so stdout stays the tool's answer)."""
    print(f"decK build [{time.monotonic() - began:6.1f} s] {text}", file=sys.stderr, flush=True)


def _build_deck_locked(go: str, version: str, target: Path, timeout: float) -> Path:
    began = time.monotonic()
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    _progress(began, f"downloading {DECK_MODULE}@{version} from the Go module proxy")
    download = subprocess.run([go, "mod", "download", "-json", f"{DECK_MODULE}@{version}"], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    if download.returncode != 0:
        try:
            reason = str(json.loads(download.stdout).get("Error", ""))
        except ValueError:
            reason = ""
        raise DeckUnavailable(f"the Go module proxy did not serve {DECK_MODULE}@{version}: "
                              f"{(reason or download.stderr or download.stdout).strip()[:400]}")
    source = Path(json.loads(download.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix="otelgate-deck-") as tmp:
        work = Path(tmp) / "deck"
        shutil.copytree(source, work)
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
        overrides = DECK_REQUIRE_OVERRIDES.get(version, {})
        if overrides:
            edit = subprocess.run([go, "mod", "edit", *(f"-require={m}@{v}" for m, v in overrides.items())],
                                  cwd=work, capture_output=True, text=True, timeout=60, env=env, check=False)
            if edit.returncode != 0:
                raise DeckUnavailable(f"go mod edit of decK {version} failed: {edit.stderr.strip()[-800:]}")
        partial = target / "deck.partial"
        _progress(began, f"go build {deck_build_name(version)} (a few minutes on 2 cores when the caches are cold)")
        stamp = f"-X {DECK_MODULE}/cmd.VERSION={version} -X {DECK_MODULE}/cmd.COMMIT={deck_build_name(version)}"
        build = subprocess.run([go, "build", "-trimpath", "-ldflags", f"-s -w {stamp}", "-o", str(partial), "."],
                               cwd=work, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if build.returncode != 0:
            raise DeckUnavailable(f"go build of decK {deck_build_name(version)} failed (the lines that name a module "
                                  f"with 403 Forbidden are ones the Go module proxy refuses): "
                                  f"{build.stderr.strip()[-1500:]}")
        partial.replace(target / "deck")
    _progress(began, f"done: {target / 'deck'} ({(target / 'deck').stat().st_size / 1e6:.1f} MB)")
    return target / "deck"


def deck_file_validate(kong_yaml: str | Path, deck: Path | None = None,
                       timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``deck file validate <kong.yaml>``, offline. What decK checks there: YAML/JSON parsing; the file against its
    JSON schema of entity structure (unknown fields and wrong types on services, routes, plugins... are errors; a
    plugin's ``config`` is an open object, so plugin options such as ``traces_endpoint`` are NOT checked, and neither
    is ``_format_version``); then the in-memory state: references to entities that do not exist, duplicates.
    Analytics are off: decK otherwise sends a UDP report to Kong for every command."""
    binary = deck or find_deck()
    return subprocess.run([str(binary), "--analytics=false", "file", "validate", str(kong_yaml)],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "DECK_ANALYTICS": "off"})
