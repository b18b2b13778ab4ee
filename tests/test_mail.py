"""Emails and their delivery: MIME structure and headers, the outbox, a real SMTP server (aiosmtpd) that
defers, bounces and drops, and `veille digest --send` killed mid-batch then rerun: every member once."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from veille.digest import build_digest, member_digest
from veille.errors import MailError
from veille.mail import deliver_week, message_bytes, render_email, send_text

from .digestdata import BASE, SOURCES, WEEK, add_members, populate
from .smtpserver import Script, SmtpServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def msettings(settings, tmp_path):
    return settings.replace(
        digests_dir=str(tmp_path / "digests"), public_url=f"{BASE}/veille", smtp_rate=1000.0,
        mail_from="veille@territoires-numeriques.fr", reply_to="Équipe veille <contact@territoires-numeriques.fr>",
        organisation="Association des territoires numériques",
    )


@pytest.fixture
def week(store):
    populate(store)
    return store, add_members(store)


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def _links(text: str) -> set[str]:
    return set(re.findall(r"https?://[^\s\"<>]+", text))


def _hrefs(html: str) -> set[str]:
    from html import unescape

    return {unescape(h) for h in re.findall(r'href="([^"]+)"', html)}


def _smtp_settings(msettings, server):
    return msettings.replace(smtp_host=server.host, smtp_port=server.port, smtp_tls="none")


# -- rendering --------------------------------------------------------------------------------------


def test_email_structure_and_headers(week, msettings):
    store, members = week
    digest = build_digest(store, WEEK, msettings, SOURCES)
    msg = _parse(message_bytes(render_email(member_digest(digest, members["alice"]), msettings)))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert msg["Subject"] == "Veille territoires numériques — semaine 48 (23–29 novembre 2026) : 8 articles"
    assert msg["From"].addresses[0].display_name == "Association des territoires numériques"
    assert msg["From"].addresses[0].addr_spec == "veille@territoires-numeriques.fr"
    assert msg["To"] == "Alice Martin <alice.martin@mairie-saint-vallier.fr>"
    assert msg["Reply-To"].addresses[0].addr_spec == "contact@territoires-numeriques.fr"
    assert msg["Date"].datetime is not None
    assert re.fullmatch(r"<veille\.2026-W48\.\d+\.[0-9a-f]{16}@territoires-numeriques\.fr>", msg["Message-ID"])
    token = members["alice"].unsubscribe_token
    assert msg["List-Unsubscribe"] == (f"<mailto:veille@territoires-numeriques.fr?subject=unsubscribe%20{token}>, "
                                       f"<{BASE}/veille/unsubscribe/{token}>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    raw = message_bytes(render_email(member_digest(digest, members["alice"]), msettings))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")) and raw.isascii()


def test_fast_serialisation_gives_the_bytes_of_the_email_package(week, msettings):
    from veille.mail import _WIRE, _member_values, _personalise, _renderer

    store, members = week
    digest = build_digest(store, WEEK, msettings, SOURCES)
    for key in ("alice", "bruno", "chloe"):
        md = member_digest(digest, members[key])
        msg = render_email(md, msettings)
        assert message_bytes(msg) == msg.as_bytes(policy=_WIRE)
        # the blocks, encoded one by one, decode to the whole body
        parsed = _parse(message_bytes(msg))
        html, text = _renderer(digest, msettings).bodies(md)
        values = _member_values(md, msettings)
        assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == _personalise(html, values, True)
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == _personalise(text, values, False)


def test_message_id_is_stable_per_week_and_member(week, msettings):
    store, members = week
    digest = build_digest(store, WEEK, msettings, SOURCES)
    first = render_email(member_digest(digest, members["alice"]), msettings)["Message-ID"]
    again = render_email(member_digest(build_digest(store, WEEK, msettings, SOURCES), members["alice"]), msettings)
    other = render_email(member_digest(digest, members["bruno"]), msettings)["Message-ID"]
    assert again["Message-ID"] == first and other != first


def test_html_is_inlined_table_layout_and_text_has_the_same_links(week, msettings):
    store, members = week
    digest = build_digest(store, WEEK, msettings, SOURCES)
    msg = _parse(message_bytes(render_email(member_digest(digest, members["alice"]), msettings)))
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert re.search(r'<a href="[^"]+" style="[^"]*font-weight: bold', html)  # CSS inlined
    assert "<style>" in html and ".badge" not in html  # only the @media rules stay in <style>
    assert "max-width: 600px" in html and "<table" in html
    assert not re.search(r"display:\s*(flex|grid)", html)
    assert "@media only screen and (max-width: 480px)" in html  # kept for phones
    assert _hrefs(html) == _links(text)
    assert f"{BASE}/courrier/cyber-courrier" in text
    assert "Bonjour Alice Martin," in text and "Bonjour Alice Martin," in html
    assert "À LA UNE" in text and "Cybersécurité" in html


def test_member_content_is_personal(week, msettings):
    store, members = week
    digest = build_digest(store, WEEK, msettings, SOURCES)
    bruno = _parse(message_bytes(render_email(member_digest(digest, members["bruno"]), msettings)))
    text = bruno.get_body(("plain",)).get_content()
    assert "CYBERSÉCURITÉ" in text and "INCLUSION NUMÉRIQUE" not in text and "DONNÉES ET OPEN DATA" not in text
    assert members["bruno"].unsubscribe_token in text and members["alice"].unsubscribe_token not in text
    assert bruno["Subject"].endswith(": 4 articles")


def test_header_injection_and_spoofing_do_not_reach_headers(week, msettings):
    store, members = week
    eve, _ = store.upsert_member("eve@commune-exemple.fr", "Eve\r\nBcc: victime@example.org\u202e", "", None)
    digest = build_digest(store, WEEK, msettings.replace(organisation="Asso\nX-Injected: 1"), SOURCES)
    raw = message_bytes(render_email(member_digest(digest, eve), msettings.replace(organisation="Asso\nX-Injected: 1")))
    msg = _parse(raw)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert "\u202e" not in str(msg["To"]) and msg["To"].addresses[0].addr_spec == "eve@commune-exemple.fr"
    html = msg.get_body(("html",)).get_content()
    for bad in ("<script", "javascript:", "onclick", "<img", "pixel.gif", "\u202e"):
        assert bad not in html and bad not in msg.get_body(("plain",)).get_content()


def test_list_unsubscribe_offers_mailto_and_https(week, msettings):
    store, members = week
    settings = msettings.replace(public_url="https://veille.territoires-numeriques.fr/")
    digest = build_digest(store, WEEK, settings, SOURCES)
    msg = _parse(message_bytes(render_email(member_digest(digest, members["bruno"]), settings)))
    token = members["bruno"].unsubscribe_token
    uris = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    assert [u.split(":", 1)[0] for u in uris] == ["mailto", "https"]
    assert uris[1] == f"https://veille.territoires-numeriques.fr/unsubscribe/{token}"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("url", ["http://veille.territoires-numeriques.fr", "http://203.0.113.7/veille",
                                 "http://127.0.0.1.nip.io/veille", "http://localhost.example.org"])
def test_an_http_public_url_on_a_public_host_is_refused_naming_the_setting(week, msettings, url):
    from veille.errors import ConfigError

    store, members = week
    settings = msettings.replace(public_url=url)  # .replace() skips load_settings: mail checks again
    digest = build_digest(store, WEEK, settings, SOURCES)
    with pytest.raises(ConfigError, match=r"\[public_url\].*not https.*RFC 8058") as info:
        render_email(member_digest(digest, members["alice"]), settings)
    assert info.value.key == "public_url" and "VEILLE_PUBLIC_URL" in info.value.hint
    with pytest.raises(ConfigError, match=r"\[public_url\]"):
        deliver_week(store, WEEK, settings, SOURCES, send=False)
    assert not (Path(settings.digests_dir) / WEEK).exists()  # refused before anything was written


@pytest.mark.parametrize("base", ["http://127.0.0.1:8000/veille", "http://localhost/veille", "http://[::1]:8080"])
def test_an_http_public_url_on_loopback_is_accepted(week, msettings, base):
    store, members = week
    settings = msettings.replace(public_url=base)
    digest = build_digest(store, WEEK, settings, SOURCES)
    msg = _parse(message_bytes(render_email(member_digest(digest, members["alice"]), settings)))
    assert f"<{base}/unsubscribe/{members['alice'].unsubscribe_token}>" in str(msg["List-Unsubscribe"])


def test_a_member_following_many_topics_gets_the_email_story_budget(store, msettings):
    from datetime import datetime, timezone

    from veille.digest import EMAIL_ITEM_BUDGET

    from .digestdata import Doc

    n_topics, per_topic = 25, 6
    topics = [(f"t{t:02d}", f"Thème {t}") for t in range(n_topics)]
    docs = [Doc(f"t{t:02d}-{i}", "gazette", f"Article {i} du thème {t}", f"Résumé de l'article {i} du thème {t}.",
                "", datetime(2026, 11, 24, 8, i, tzinfo=timezone.utc), {f"t{t:02d}": (9 - i, (f"mot{t}",))})
            for t in range(n_topics) for i in range(per_topic)]
    populate(store, docs, topics)
    everything, _ = store.upsert_member("tout@commune.fr", "Tout", "", None)
    three, _ = store.upsert_member("trois@commune.fr", "Trois", "", ["t00", "t01", "t02"])
    settings = msettings.replace(section_cap=4)
    digest = build_digest(store, WEEK, settings, SOURCES)
    assert all(len(s.items) == 4 and len(s.cut) == per_topic - 4 for s in digest.sections)

    md = member_digest(digest, everything)
    assert len(md.sections) == n_topics
    per_section = max(2, EMAIL_ITEM_BUDGET // n_topics)  # 40 // 25 = 1, never under 2
    assert per_section == 2
    for view in md.sections:
        assert len(view.entries) == per_section
        # the best-ranked stories are the ones kept
        assert [e.item.title for e in view.entries] == [f"Article {i} du thème {int(view.topic.id[1:])}"
                                                        for i in range(per_section)]
        assert view.more == per_topic - per_section  # 2 cut by the budget + 2 beyond the section cap
    text = _parse(message_bytes(render_email(md, settings))).get_body(("plain",)).get_content()
    assert text.count(f"{per_topic - per_section} autres sujets dans l’archive de la semaine") == n_topics
    assert text.count("Article 2 du thème") == 0

    few = member_digest(digest, three)  # 40 // 3 = 13 per section: the section cap (4) rules
    assert [len(v.entries) for v in few.sections] == [4, 4, 4]
    assert [v.more for v in few.sections] == [per_topic - 4] * 3


# -- the outbox ---------------------------------------------------------------------------------------


def test_without_smtp_the_outbox_gets_one_eml_per_member_with_news(week, msettings):
    store, members = week
    report = deliver_week(store, WEEK, msettings, SOURCES, send=True)  # --send, but no SMTP host
    assert report.mode == "outbox"
    outbox = Path(report.outbox)
    names = sorted(p.name for p in outbox.glob("*.eml"))
    assert names == ["alice.martin@mairie-saint-vallier.fr.eml", "bruno.leroy@grand-vallon.fr.eml",
                     "chloe.nguyen@creuse.fr.eml"]
    assert report.empty == ("damien.petit@sivom-exemple.fr",)
    first = {p.name: _parse(p.read_bytes())["Message-ID"] for p in outbox.glob("*.eml")}
    states = store.delivery_states(WEEK)
    assert states[members["alice"].id].status == "written" and states[members["damien"].id].status == "empty"
    assert (Path(report.folder) / "index.html").exists() and (Path(report.folder) / "digest.json").exists()
    again = deliver_week(store, WEEK, msettings, SOURCES, send=False)
    assert sorted(again.written) == sorted(report.written)
    assert {p.name: _parse(p.read_bytes())["Message-ID"] for p in outbox.glob("*.eml")} == first
    assert store.scalar("SELECT count(*) FROM deliveries WHERE week = ?", (WEEK,)) == 4


# -- SMTP -----------------------------------------------------------------------------------------------


def test_smtp_sends_each_member_their_digest_once(week, msettings, smtp):
    store, members = week
    settings = _smtp_settings(msettings, smtp)
    report = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert report.mode == "smtp" and sorted(report.sent) == sorted(
        m.email for k, m in members.items() if k != "damien")
    got = smtp.by_recipient()
    assert {k: len(v) for k, v in got.items()} == {members[k].email: 1 for k in ("alice", "bruno", "chloe")}
    chloe = got["chloe.nguyen@creuse.fr"][0].message
    assert chloe["To"].addresses[0].addr_spec == "chloe.nguyen@creuse.fr"
    assert "INCLUSION NUMÉRIQUE" in chloe.get_body(("plain",)).get_content()
    assert got["alice.martin@mairie-saint-vallier.fr"][0].mail_from == "veille@territoires-numeriques.fr"
    rows = {r["email"]: r for r in store.delivery_rows(WEEK)}
    assert rows["alice.martin@mairie-saint-vallier.fr"]["status"] == "sent"
    assert rows["alice.martin@mairie-saint-vallier.fr"]["message_id"] == got[
        "alice.martin@mairie-saint-vallier.fr"][0].message_id
    assert smtp.connections == 1  # one connection reused for the whole batch
    rerun = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert rerun.sent == () and len(rerun.already) == 3 and len(smtp.messages) == 3
    assert smtp.connections == 1  # nothing left to send: no connection opened


def test_a_4xx_is_retried_then_succeeds(week, msettings, smtp):
    store, members = week
    smtp.script = Script(defer_first=1, defer_rcpt_first=1)
    report = deliver_week(store, WEEK, _smtp_settings(msettings, smtp), SOURCES, send=True, backoff=0.01)
    assert len(report.sent) == 3 and not report.failed
    assert all(len(v) == 1 for v in smtp.by_recipient().values()) and len(smtp.messages) == 3
    first = min(store.delivery_rows(WEEK), key=lambda r: r["email"])  # alice, served first
    assert first["status"] == "sent" and first["attempts"] == 3
    assert smtp.connections == 1  # a 451 is answered with RSET on the same connection, not a reconnect


class FakeClock:
    """Stands for the `time` module in veille.mail: `sleep` records the wait and moves the clock on, and
    every reading of the clock costs a little (work between two sends), so nothing really waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        self.now += 0.01
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_smtp_rate_paces_consecutive_sends(week, msettings, smtp, monkeypatch):
    import smtplib

    import veille.mail

    store, members = week
    clock = FakeClock()
    monkeypatch.setattr(veille.mail, "time", clock)
    starts: list[float] = []  # the fake clock when each transaction opened (MAIL FROM on the wire)
    real_mail = smtplib.SMTP.mail

    def mail(self, *args, **kwargs):
        starts.append(clock.now)
        return real_mail(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "mail", mail)
    rate = 2.0
    report = deliver_week(store, WEEK, _smtp_settings(msettings, smtp).replace(smtp_rate=rate), SOURCES, send=True)
    assert len(report.sent) == 3 and len(smtp.messages) == 3 and smtp.connections == 1
    assert len(starts) == 3
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(gap >= 1 / rate - 1e-9 for gap in gaps), gaps
    # the pacing slept (the fake clock moves only 0.01 s per reading otherwise), once per send after the first
    assert len(clock.sleeps) == 2 and all(0 < s <= 1 / rate for s in clock.sleeps), clock.sleeps


def test_a_fast_smtp_rate_does_not_sleep_between_sends(week, msettings, smtp, monkeypatch):
    import veille.mail

    store, members = week
    clock = FakeClock()  # 0.01 s per clock reading: already more than 1/1000 s between two sends
    monkeypatch.setattr(veille.mail, "time", clock)
    report = deliver_week(store, WEEK, _smtp_settings(msettings, smtp).replace(smtp_rate=1000.0), SOURCES, send=True)
    assert len(report.sent) == 3 and clock.sleeps == []


def test_a_5xx_is_a_permanent_bounce_never_retried(week, msettings, smtp):
    store, members = week
    smtp.script = Script(reject={members["bruno"].email}, reject_data={members["chloe"].email})
    settings = _smtp_settings(msettings, smtp)
    report = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert report.sent == (members["alice"].email,)
    assert dict(report.bounced).keys() == {members["bruno"].email, members["chloe"].email}
    assert "550" in dict(report.bounced)[members["bruno"].email]
    assert "554" in dict(report.bounced)[members["chloe"].email]
    smtp.script = Script()
    rerun = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert rerun.sent == () and len(smtp.messages) == 1
    assert store.delivery_states(WEEK)[members["bruno"].id].status == "bounced"


def test_persistent_4xx_stops_the_batch_and_the_next_run_recovers(store, msettings, smtp):
    populate(store)
    emails = [store.upsert_member(f"agent{i}@commune-{i}.fr", f"Agent {i}", "", None)[0].email for i in range(6)]
    smtp.script = Script(defer_first=1000)
    settings = _smtp_settings(msettings, smtp)
    with pytest.raises(MailError, match="deferred 3 members in a row") as info:
        deliver_week(store, WEEK, settings, SOURCES, send=True, retries=1, backoff=0)
    report = info.value.report
    assert len(report.failed) == 6 and "451" in report.failed[0][1] and report.sent == ()
    smtp.script = Script()
    rerun = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert sorted(rerun.sent) == sorted(emails)
    assert {k: len(v) for k, v in smtp.by_recipient().items()} == {e: 1 for e in emails}


def test_smtp_server_down_is_a_clear_error_and_nothing_is_lost(week, msettings, smtp):
    store, members = week
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    down = msettings.replace(smtp_host="127.0.0.1", smtp_port=closed_port)
    with pytest.raises(MailError, match=rf"cannot talk to the SMTP server 127\.0\.0\.1:{closed_port}.*VEILLE_SMTP_HOST"):
        deliver_week(store, WEEK, down, SOURCES, send=True)
    assert {s.status for s in store.delivery_states(WEEK).values()} <= {"empty"}
    report = deliver_week(store, WEEK, _smtp_settings(msettings, smtp), SOURCES, send=True)
    assert len(report.sent) == 3 and len(smtp.messages) == 3


def test_connection_lost_during_data_is_uncertain_and_never_resent_silently(week, msettings, smtp):
    store, members = week
    smtp.script = Script(drop_at=("DATA", 2))
    settings = _smtp_settings(msettings, smtp)
    report = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert report.uncertain == (members["bruno"].email,)
    assert smtp.connections == 2  # the dropped connection was replaced for chloe (the counter counts)
    assert sorted(report.sent) == sorted([members["alice"].email, members["chloe"].email])
    assert store.delivery_states(WEEK)[members["bruno"].id].status == "sending"
    smtp.script = Script()
    rerun = deliver_week(store, WEEK, settings, SOURCES, send=True)
    assert rerun.sent == () and rerun.uncertain == (members["bruno"].email,)
    forced = deliver_week(store, WEEK, settings, SOURCES, send=True, retry_uncertain=True)
    assert forced.sent == (members["bruno"].email,)
    assert {k: len(v) for k, v in smtp.by_recipient().items()} == {
        members[k].email: 1 for k in ("alice", "bruno", "chloe")}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_and_a_refused_login(week, msettings):
    store, members = week
    with SmtpServer(credentials=("veille", "s3cret-pour-les-tests")) as server:
        settings = _smtp_settings(msettings, server).replace(smtp_user="veille", smtp_password="mauvais")
        with pytest.raises(MailError, match="refused the login 'veille'.*VEILLE_SMTP_PASSWORD"):
            deliver_week(store, WEEK, settings, SOURCES, send=True)
        assert server.messages == [] and store.delivery_states(WEEK) == {}
        report = deliver_week(store, WEEK, settings.replace(smtp_password="s3cret-pour-les-tests"), SOURCES, send=True)
        assert len(report.sent) == 3 and len(server.messages) == 3


def test_send_text_for_the_staff_report(msettings, smtp):
    settings = _smtp_settings(msettings, smtp)
    send_text(settings, "equipe@territoires-numeriques.fr", "Rapport d'exploitation", "Trois sources échouent.\n")
    msg = smtp.messages[0].message
    assert msg["Subject"] == "Rapport d'exploitation"
    assert msg.get_content().replace("\r\n", "\n") == "Trois sources échouent.\n"
    with pytest.raises(MailError, match="no SMTP server configured"):
        send_text(msettings, "equipe@territoires-numeriques.fr", "x", "y")


# -- kill -9 mid-batch, then rerun ----------------------------------------------------------------------


def _cli(tmp_path: Path, server: SmtpServer, *extra: str) -> list[str]:
    return [sys.executable, "-m", "veille.cli", "--db", str(tmp_path / "veille.db"),
            "--sources", str(tmp_path / "absent.yaml"), "--config", str(tmp_path / "absent.yaml"),
            "digest", "--week", WEEK, "--send", "--json", *extra]


def _env(tmp_path: Path, server: SmtpServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILLE_")}
    env.update(server.env(), VEILLE_SMTP_RATE="1000", VEILLE_DIGESTS_DIR=str(tmp_path / "digests"),
               VEILLE_PUBLIC_URL=f"{BASE}/veille", VEILLE_MAIL_FROM="veille@territoires-numeriques.fr",
               PYTHONPATH=str(ROOT))
    return env


@pytest.mark.parametrize("stage, k", [("MAIL", 1), ("RCPT", 3), ("DATA", 1), ("DATA", 4), ("MAIL", 6)])
def test_killed_mid_batch_then_rerun_serves_every_member_exactly_once(tmp_path, store, stage, k):
    populate(store)
    emails = [store.upsert_member(f"elu{i}@commune-{i}.fr", f"Élu {i}", f"Commune {i}", None)[0].email
              for i in range(6)]
    with SmtpServer() as server:
        proc = subprocess.Popen(_cli(tmp_path, server), env=_env(tmp_path, server), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        server.script = Script(hook_at=(stage, k), hook=lambda: os.kill(proc.pid, signal.SIGKILL))
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL
        killed_with = len(server.messages)
        server.script = Script()
        rerun = subprocess.run(_cli(tmp_path, server), env=_env(tmp_path, server), cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        report = json.loads(rerun.stdout)
        got = {r: len(m) for r, m in server.by_recipient().items()}
    assert got == {e: 1 for e in emails}, (stage, k, killed_with, report)
    if stage == "DATA":  # the server had the k-th message when the sender died: reported, not resent
        assert report["uncertain"] == [emails[k - 1]]
    else:
        assert report["uncertain"] == [] and len(report["sent"]) == 6 - killed_with


# -- the CLI ---------------------------------------------------------------------------------------------


def test_cli_digest_writes_the_week_and_the_outbox(tmp_path, week, monkeypatch):
    from click.testing import CliRunner

    from veille.cli import main

    store, members = week
    monkeypatch.setenv("VEILLE_DIGESTS_DIR", str(tmp_path / "digests"))
    monkeypatch.setenv("VEILLE_PUBLIC_URL", f"{BASE}/veille")
    base = ["--db", store.path, "--sources", str(tmp_path / "absent.yaml"), "--config", str(tmp_path / "absent.yaml")]
    bad = CliRunner().invoke(main, [*base, "digest", "--week", "2026-48"])
    assert bad.exit_code == 2 and "write it like 2026-W48" in bad.output
    result = CliRunner().invoke(main, [*base, "digest", "--week", WEEK, "--send"])
    assert result.exit_code == 0, result.output
    assert "no SMTP server configured" in result.stderr
    assert "outbox: 3 written, 1 without news" in result.stdout
    assert len(list((tmp_path / "digests" / WEEK / "outbox").glob("*.eml"))) == 3
    one = CliRunner().invoke(main, [*base, "digest", "--week", WEEK, "--member", members["bruno"].email, "--json"])
    assert json.loads(one.stdout)["written"] == [members["bruno"].email]
    unknown = CliRunner().invoke(main, [*base, "digest", "--week", WEEK, "--member", "personne@nulle-part.fr"])
    assert unknown.exit_code == 1 and "is not a member" in unknown.stderr
