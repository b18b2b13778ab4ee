"""SMTP delivery over TLS against a real aiosmtpd server on 127.0.0.1: STARTTLS and implicit TLS (SMTPS), with
AUTH, a refused password, and certificates veille must refuse (private CA not trusted, another CA, another name).

The certificates are made at test time (tests/pki.py): a throwaway private CA and a server certificate for
127.0.0.1/localhost. veille builds its TLS context with `ssl.create_default_context()`, so an operator trusts
a private CA the OpenSSL way, with `SSL_CERT_FILE`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veille.errors import MailError
from veille.mail import deliver_week

from .digestdata import BASE, SOURCES, WEEK, add_members, populate
from .pki import server_context
from .smtpserver import Login, SmtpServer

USER, PASSWORD = "veille@territoires-numeriques.fr", "Mot-de-passe-de-test-2026"
SERVED = ("alice", "bruno", "chloe")  # damien follows no topic with news this week

# aiosmtpd 1.4 cannot see implicit TLS when checking AUTH (see tests/smtpserver.py), so it warns there.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


# -- certificates (tests/pki.py; the `pki` and `trust_ca` fixtures are in conftest.py) -----------------


def _tls_server(mode: str, pki: Path, cert: str = "server") -> SmtpServer:
    key = "tls_context" if mode == "starttls" else "ssl_context"
    return SmtpServer(credentials=(USER, PASSWORD), **{key: server_context(pki, cert)})


# -- settings and data --------------------------------------------------------------------------------


@pytest.fixture
def msettings(settings, tmp_path):
    return settings.replace(
        digests_dir=str(tmp_path / "digests"), public_url=f"{BASE}/veille", smtp_rate=1000.0,
        mail_from="veille@territoires-numeriques.fr", organisation="Association des territoires numériques",
    )


@pytest.fixture
def week(store):
    populate(store)
    return store, add_members(store)


def _tls_settings(msettings, server: SmtpServer, password: str = PASSWORD):
    return msettings.replace(smtp_host=server.host, smtp_port=server.port, smtp_tls=server.tls_mode,
                             smtp_user=USER, smtp_password=password)


def _assert_nothing_sent(store, server: SmtpServer) -> None:
    assert server.messages == []
    assert {s.status for s in store.delivery_states(WEEK).values()} <= {"empty", "failed"}


# -- delivery over TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_each_member_gets_the_digest_once_over_tls_after_login(week, msettings, pki, trust_ca, mode):
    store, members = week
    with _tls_server(mode, pki) as server:
        settings = _tls_settings(msettings, server)
        report = deliver_week(store, WEEK, settings, SOURCES, send=True)
        assert report.mode == "smtp" and sorted(report.sent) == sorted(members[k].email for k in SERVED)
        assert {r: len(m) for r, m in server.by_recipient().items()} == {members[k].email: 1 for k in SERVED}
        # every MAIL FROM came inside TLS, from the authenticated user; the password never travelled in clear
        assert {(m.tls, m.login) for m in server.messages} <= {("TLSv1.2", USER), ("TLSv1.3", USER)}
        assert server.logins and all(login.accepted and login.tls for login in server.logins)
        assert {s.status for s in store.delivery_states(WEEK).values()} == {"sent", "empty"}
        rerun = deliver_week(store, WEEK, settings, SOURCES, send=True)
        assert rerun.sent == () and sorted(rerun.already) == sorted(report.sent) and len(server.messages) == 3


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_cli_sends_over_tls_from_the_environment(tmp_path, week, pki, trust_ca, monkeypatch, mode):
    from click.testing import CliRunner

    from veille.cli import main

    store, members = week
    absent = str(tmp_path / "absent.yaml")
    with _tls_server(mode, pki) as server:
        env = {**server.env(), "VEILLE_SMTP_USER": USER, "VEILLE_SMTP_PASSWORD": PASSWORD, "VEILLE_SMTP_RATE": "1000",
               "VEILLE_DIGESTS_DIR": str(tmp_path / "digests"), "VEILLE_PUBLIC_URL": f"{BASE}/veille",
               "VEILLE_MAIL_FROM": "veille@territoires-numeriques.fr"}
        assert env["VEILLE_SMTP_HOST"] == "127.0.0.1" and env["VEILLE_SMTP_TLS"] == mode
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(main, ["--db", store.path, "--sources", absent, "--config", absent,
                                           "digest", "--week", WEEK, "--send", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["mode"] == "smtp" and sorted(report["sent"]) == sorted(members[k].email for k in SERVED)
        assert {r: len(m) for r, m in server.by_recipient().items()} == {members[k].email: 1 for k in SERVED}
        assert all(m.tls and m.login == USER for m in server.messages)


# -- refusals: nothing sent, nothing marked sent --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_a_wrong_password_is_a_clear_error_and_nothing_is_marked_sent(week, msettings, pki, trust_ca, mode):
    store, members = week
    with _tls_server(mode, pki) as server:
        settings = _tls_settings(msettings, server, password="mauvais-mot-de-passe")
        with pytest.raises(MailError, match=r"refused the login 'veille@territoires-numeriques\.fr'.*535.*"
                                            r"VEILLE_SMTP_PASSWORD") as info:
            deliver_week(store, WEEK, settings, SOURCES, send=True)
        assert info.value.report.sent == () and len(info.value.report.failed) == 3
        _assert_nothing_sent(store, server)
        assert server.logins and all(not login.accepted and login.tls for login in server.logins)
        # fixed settings: the next run serves everybody, once
        report = deliver_week(store, WEEK, _tls_settings(msettings, server), SOURCES, send=True)
        assert len(report.sent) == 3 and len(server.messages) == 3


def test_cli_wrong_password_exits_1_with_the_reason(tmp_path, week, pki, trust_ca, monkeypatch):
    from click.testing import CliRunner

    from veille.cli import main

    store, members = week
    absent = str(tmp_path / "absent.yaml")
    with _tls_server("starttls", pki) as server:
        for name, value in {**server.env(), "VEILLE_SMTP_USER": USER, "VEILLE_SMTP_PASSWORD": "mauvais",
                            "VEILLE_DIGESTS_DIR": str(tmp_path / "digests"),
                            "VEILLE_PUBLIC_URL": f"{BASE}/veille"}.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(main, ["--db", store.path, "--sources", absent, "--config", absent,
                                           "digest", "--week", WEEK, "--send"])
        assert result.exit_code == 1, result.output
        assert "error:" in result.stderr and "refused the login" in result.stderr
        assert "VEILLE_SMTP_PASSWORD" in result.stderr and "smtp: 0 sent" in result.stdout
        _assert_nothing_sent(store, server)


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
@pytest.mark.parametrize("trust", ["system store only", "another CA"])
def test_an_untrusted_certificate_is_refused_before_any_password_or_mail(week, msettings, pki, monkeypatch,
                                                                           mode, trust):
    store, members = week
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if trust == "another CA":
        monkeypatch.setenv("SSL_CERT_FILE", str(pki / "other-ca.pem"))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with _tls_server(mode, pki) as server:
        with pytest.raises(MailError, match=r"(?i)TLS certificate.*not trusted.*certificate verify failed.*"
                                            r"SSL_CERT_FILE") as info:
            deliver_week(store, WEEK, _tls_settings(msettings, server), SOURCES, send=True)
        assert "127.0.0.1" in str(info.value)
        _assert_nothing_sent(store, server)
        assert server.logins == [] and server.counts.get("MAIL", 0) == 0  # no fallback to plain text


def test_a_certificate_for_another_name_is_refused(week, msettings, pki, trust_ca):
    store, members = week
    with _tls_server("starttls", pki, cert="elsewhere") as server:
        with pytest.raises(MailError, match=r"(?i)TLS certificate.*not trusted.*127\.0\.0\.1"):
            deliver_week(store, WEEK, _tls_settings(msettings, server), SOURCES, send=True)
        _assert_nothing_sent(store, server)
        assert server.logins == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_starttls_missing_on_the_server_never_falls_back_to_plain_text(week, msettings, trust_ca):
    store, members = week
    with SmtpServer(credentials=(USER, PASSWORD)) as plain:  # accepts AUTH in clear, offers no STARTTLS
        settings = _tls_settings(msettings, plain).replace(smtp_tls="starttls")
        with pytest.raises(MailError, match=r"(?i)STARTTLS.*not supported"):
            deliver_week(store, WEEK, settings, SOURCES, send=True)
        _assert_nothing_sent(store, plain)
        assert plain.logins == [] and plain.counts.get("MAIL", 0) == 0
        with pytest.raises(MailError, match=r"cannot talk to the SMTP server 127\.0\.0\.1.*VEILLE_SMTP_TLS"):
            deliver_week(store, WEEK, settings.replace(smtp_tls="ssl"), SOURCES, send=True)
        _assert_nothing_sent(store, plain)
        assert plain.logins == []


def test_login_attempts_are_recorded_with_their_tls_state(pki, trust_ca):
    """The helper's own record must be able to say "in clear", or the TLS assertions above prove nothing."""
    import smtplib

    with SmtpServer(credentials=(USER, PASSWORD)) as plain, _tls_server("starttls", pki) as tls:
        with smtplib.SMTP(plain.host, plain.port, timeout=10) as client:
            client.login(USER, PASSWORD)
            client.sendmail(USER, ["agent@commune-exemple.fr"], b"Subject: test\r\n\r\nbonjour\r\n")
        with smtplib.SMTP(tls.host, tls.port, timeout=10) as client:
            client.ehlo()
            code, _ = client.mail(USER)
            assert code == 530  # STARTTLS required first
    assert plain.logins == [Login(USER, True, None)]
    assert (plain.messages[0].tls, plain.messages[0].login) == (None, USER)
    assert tls.logins == [] and tls.messages == []
