"""Shared fixtures: a loopback HTTP server, a temporary SQLite archive, settings for tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from veille.config import Settings, default_settings
from veille.store import Store

from .httpserver import FixtureServer
from .pki import make_pki

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit the developer's VEILLE_* variables (an SMTP host would send real mail)."""
    for name in list(os.environ):
        if name.startswith("VEILLE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def http_server():
    with FixtureServer() as server:
        yield server


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """Throwaway certificates (tests/pki.py): ca, server (127.0.0.1/localhost), elsewhere, other-ca."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trust_ca(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust the private CA as an operator would: SSL_CERT_FILE, read by ssl.create_default_context()."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def settings() -> Settings:
    """Defaults with loopback allowed and politeness relaxed, so tests run fast against 127.0.0.1."""
    return default_settings().replace(
        allow_private=True, politeness_delay=0.0, connect_timeout=2.0, read_timeout=2.0, request_deadline=5.0,
        workers=1,
    )


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "veille.db")
    yield s
    s.close()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (developer fixtures are not published)")
    return SHARED_DATA
