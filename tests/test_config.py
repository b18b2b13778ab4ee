"""sources.yaml and settings validation: every error names file, line and key, and the CLI exits 2."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.config import SETTINGS, load_settings, load_sources, parse_duration
from veille.errors import ConfigError
from veille.types import Source

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
defaults: {interval: 1h, full_text: true}
sources:
  - id: gazette
    name: La Gazette des communes
    type: feed
    url: https://www.lagazettedescommunes.com/feed/
    interval: 30m
  - id: vie-publique
    name: vie-publique.fr
    type: html
    url: https://www.vie-publique.fr/en-bref
    link_selector: "h3 a"
    excerpt: full
"""


def test_valid_file_loads_with_defaults_applied():
    sources = load_sources("s.yaml", GOOD)
    assert [s.id for s in sources] == ["gazette", "vie-publique"]
    assert sources[0].interval == timedelta(minutes=30)
    assert sources[1].interval == timedelta(hours=1)
    assert sources[1].link_selector == "h3 a" and sources[1].excerpt == "full"
    assert sources[0].line == 3 and sources[1].line == 8


@pytest.mark.parametrize("bad, line, key, words", [
    (GOOD.replace("    interval: 30m", "    intervall: 30m"), 7, "sources[0].intervall", "did you mean 'interval'"),
    (GOOD.replace("id: vie-publique", "id: gazette"), 8, "sources[gazette].id", "duplicate id"),
    (GOOD.replace("https://www.lagazettedescommunes.com/feed/", "ftp://example/feed"), 6, "sources[gazette].url",
     "not an absolute http(s) URL"),
    (GOOD.replace("interval: 30m", "interval: 30 minutes"), 7, "sources[gazette].interval", "not a duration"),
    (GOOD.replace('    link_selector: "h3 a"\n', ""), 8, "sources[vie-publique].link_selector", "needs a link_selector"),
    (GOOD.replace("type: feed", "type: podcast"), 5, "sources[gazette].type", "not a source type"),
    (GOOD.replace("excerpt: full", "excerpt: all"), 13, "sources[vie-publique].excerpt", "not one of"),
    (GOOD.replace('link_selector: "h3 a"', 'link_selector: "h3 >> a"'), 12, "sources[vie-publique].link_selector",
     "invalid CSS selector"),
    (GOOD.replace("defaults: {interval: 1h, full_text: true}", "defaults: {interval: 1h, full_txt: true}"), 1,
     "defaults.full_txt", "unknown key"),
    (GOOD + "  - id: x\n    name: X\n    type: feed\n", 14, "sources[2].url", "missing required key"),
    (GOOD.replace("    name: vie-publique.fr\n", "    name: vie-publique.fr\n    name: again\n"), 10, "name",
     "duplicate key"),
    (GOOD.replace("  - id: gazette", "  - id: gazette\n  bad indent: [")[:200], None, None, "invalid YAML"),
])
def test_errors_name_file_line_and_key(bad, line, key, words):
    with pytest.raises(ConfigError) as info:
        load_sources("conf/sources.yaml", bad)
    error = info.value
    assert error.path == "conf/sources.yaml"
    if line is not None:
        assert error.line == line, str(error)
        assert str(error).startswith(f"conf/sources.yaml:{line}:")
    if key is not None:
        assert error.key == key
    assert words in str(error)


def test_cli_exits_2_with_the_error_on_stderr(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(GOOD.replace("type: feed", "type: podcast"), encoding="utf-8")
    result = CliRunner().invoke(main, ["--sources", str(path), "--db", str(tmp_path / "v.db"), "sources", "list"])
    assert result.exit_code == 2
    assert f"{path}:5:" in result.output and "podcast" in result.output


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_sources(tmp_path / "nope.yaml")


def test_shipped_sources_file_lists_at_least_15_real_sources():
    sources = load_sources(ROOT / "sources.yaml")
    assert len(sources) >= 15
    assert {s.type for s in sources} == {"feed", "html", "sitemap"}
    assert all(s.url.startswith("https://") for s in sources)
    hosts = {s.url.split("/")[2] for s in sources}
    for expected in ("www.lagazettedescommunes.com", "www.banquedesterritoires.fr", "www.cert.ssi.gouv.fr",
                     "www.cnil.fr", "www.vie-publique.fr", "acteurspublics.fr", "www.maire-info.com"):
        assert expected in hosts


@pytest.mark.parametrize("text, seconds", [("45s", 45), ("30m", 1800), ("2h30m", 9000), ("1d", 86400), (90, 90)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_settings_layering(tmp_path):
    path = tmp_path / "veille.yaml"
    path.write_text("section_cap: 5\nsmtp_host: mail.internal\n", encoding="utf-8")
    settings = load_settings(path, env={"VEILLE_SMTP_HOST": "127.0.0.1", "VEILLE_SMTP_PORT": "2525"})
    assert settings.section_cap == 5
    assert settings.smtp_host == "127.0.0.1" and settings.smtp_port == 2525
    path.write_text("section_cap: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.line == 1 and info.value.key == "section_cap"
    path.write_text("smtp_password: hunter2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="VEILLE_SMTP_PASSWORD"):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match="environment variable VEILLE_SMTP_TLS"):
        load_settings(None, env={"VEILLE_SMTP_TLS": "tls"})


def test_every_setting_is_documented():
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in docs]
    assert not missing, f"settings missing from docs/operations.md: {missing}"


def test_store_offers_a_sqlite_utils_view_of_the_archive(store):
    store.sync_sources([Source(id="cnil", name="CNIL", type="feed", url="https://www.cnil.fr/fr/rss.xml")])
    assert [row["id"] for row in store.db["sources"].rows] == ["cnil"]


@pytest.mark.parametrize("url", ["https://veille.territoires-numeriques.fr", "https://veille.example.org/sous/dossier/",
                                 "http://127.0.0.1:8000/veille", "http://localhost", "http://LOCALHOST:8080/x",
                                 "http://[::1]:8080/veille"])
def test_public_url_https_or_http_on_loopback_is_accepted(url):
    assert load_settings(None, env={"VEILLE_PUBLIC_URL": url}).public_url == url


def test_public_url_in_plain_http_on_a_public_host_is_refused_naming_the_setting(tmp_path):
    # it builds the one-click unsubscribe link (List-Unsubscribe, RFC 8058), which must be https
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"VEILLE_PUBLIC_URL": "http://veille.territoires-numeriques.fr"})
    assert info.value.key == "public_url" and info.value.path == "environment variable VEILLE_PUBLIC_URL"
    assert "[public_url]" in str(info.value) and "not https" in str(info.value) and "RFC 8058" in str(info.value)
    path = tmp_path / "veille.yaml"
    path.write_text("section_cap: 5\npublic_url: http://203.0.113.7/veille\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not https") as info:
        load_settings(path, env={})
    assert info.value.key == "public_url" and info.value.line == 2
    for bad in ("http://localhost.example.org", "http://127.0.0.1.nip.io", "ftp://127.0.0.1/x"):
        with pytest.raises(ConfigError) as info:
            load_settings(None, env={"VEILLE_PUBLIC_URL": bad})
        assert info.value.key == "public_url"


def test_default_public_url_is_https():
    assert load_settings(None, env={}).public_url.startswith("https://")
