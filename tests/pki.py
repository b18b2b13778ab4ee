"""Throwaway certificates for TLS tests, made with the `openssl` command in a temporary folder: a private
CA, a server certificate for 127.0.0.1/localhost signed by it, one for another name, and an unrelated CA.

veille builds its TLS contexts from the system's trust store, so tests trust the private CA the way an
operator would: with `SSL_CERT_FILE` (the `trust_ca` fixture in conftest.py).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def _make_ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/O=veille tests/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=folder)


def _make_server_cert(folder: Path, name: str, ca: str, alt_names: str) -> None:
    (folder / f"{name}.ext").write_text(
        f"subjectAltName={alt_names}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/O=veille tests/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)


def make_pki(folder: Path) -> Path:
    """ca (trusted by `trust_ca`), server (127.0.0.1 and localhost), elsewhere (another name), other-ca."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates (apt-get install openssl)")
    _make_ca(folder, "ca")
    _make_server_cert(folder, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _make_server_cert(folder, "elsewhere", "ca", "DNS:smtp.territoires-numeriques.fr")
    _make_ca(folder, "other-ca")
    return folder


def server_context(pki: Path, name: str = "server") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / f"{name}.pem", pki / f"{name}.key")
    return context
