"""Throw-away credentials for a local control plane, made with the ``openssl`` command line tool.

One CA signs one serving certificate for 127.0.0.1 (used by the API server and by the Operator's webhook server,
which the API server calls by URL with this CA as ``caBundle``); an EC key signs service-account tokens; a random
bearer token in the ``system:masters`` group is the tests' and the Operator's identity.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    token: str
    token_file: Path


def make_credentials(directory: Path) -> Credentials:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the local control plane needs the `openssl` command (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "serving.key", directory / "serving.csr", directory / "serving.crt"
    sa_key = directory / "service-account.key"
    ext = directory / "serving.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
             "-subj", "/CN=otelgate-controlplane-ca")
    _openssl(openssl, "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    _openssl(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    _openssl(openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sa_key))
    token = secrets.token_hex(24)
    token_file = directory / "tokens.csv"
    token_file.write_text(f'{token},otelgate-admin,otelgate-admin,"system:masters"\n')
    for private in (ca_key, key, sa_key, token_file):
        private.chmod(0o600)
    return Credentials(ca_cert, cert, key, sa_key, token, token_file)


def _openssl(openssl: str, *args: str) -> None:
    done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
