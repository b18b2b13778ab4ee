"""Crashes: a real `veille` process is SIGKILLed at many points, then rerun to completion.

Fetch: 10 sources x 10 articles on a loopback server. Each kill point is an exact request of the pass
(held by the server while the kill lands, or answered and the kill sent a few milliseconds later,
while the process parses, extracts or commits), or an instant after start (migrations, source sync).
After the rerun the archive must pass `PRAGMA integrity_check` and hold exactly the articles of an
uninterrupted run: no duplicate, no loss. Most points run feeds-only passes (`--no-full-text`, fast);
six run full-text passes (article pages fetched and extracted).

Sending: `veille digest --send` is killed at every MAIL, RCPT and DATA of the batch (and a few
milliseconds after RCPT and DATA). After a plain rerun nobody has two copies; the only member not
yet served is the one reported *uncertain* whose message the server never got, and the documented
`--retry-uncertain --member` for them completes the week: everyone served exactly once.

The processes are forks of a server that imported veille once (`hostile.cli_process`): the same code
as `python -m veille.cli`, without paying the import for each of the hundred-odd runs.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from veille.store import Store

from . import hostile
from .digestdata import BASE, WEEK, populate
from .httpserver import FixtureServer
from .smtpserver import SmtpServer

SOURCES, ENTRIES = 10, 10
ENV = {"VEILLE_ALLOW_PRIVATE": "1", "VEILLE_WORKERS": "1", "VEILLE_POLITENESS_DELAY": "0",
       "VEILLE_PER_HOST_CONCURRENCY": "2", "VEILLE_REQUEST_DEADLINE": "20"}
FULL_TEXT_REQUESTS = SOURCES + SOURCES * ENTRIES + 1  # feeds, article pages, robots.txt
POINTS = hostile.fetch_kill_points(SOURCES, FULL_TEXT_REQUESTS, full_text_points=6)
assert len(POINTS) >= 50


@pytest.fixture(scope="module")
def press(tmp_path_factory):
    """The loopback press corpus and the archive of an uninterrupted run, feeds-only and full-text."""
    root = tmp_path_factory.mktemp("kill")
    with FixtureServer() as server:
        corpus = hostile.PressCorpus(server, SOURCES, ENTRIES)
        sources = corpus.sources_yaml(root / "sources.yaml")
        references = {}
        for full_text in (False, True):
            db = root / f"reference-{full_text}.db"
            assert hostile.run_cli(argv(root, sources, db, full_text), ENV, root / "reference.log") == 0
            references[full_text] = hostile.archive_snapshot(db)
            assert len(references[full_text].articles) == SOURCES * ENTRIES
        yield server, root, sources, references


def argv(root: Path, sources: Path, db: Path, full_text: bool) -> list[str]:
    return ["--db", str(db), "--sources", str(sources), "--topics", str(root / "none.yaml"),
            "--config", str(root / "none.yaml"), "fetch", *([] if full_text else ["--no-full-text"])]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS, ids=[p.label for p in POINTS])
def test_fetch_killed_then_rerun_loses_and_duplicates_nothing(press, tmp_path, point):
    server, root, sources, references = press
    db = tmp_path / "veille.db"
    command = argv(root, sources, db, point.full_text)
    code = hostile.kill_at(server, point, command, ENV, tmp_path / "killed.log")
    assert code == -9, f"the kill did not land (exit {code}): {(tmp_path / 'killed.log').read_text()[-500:]}"
    if db.exists():
        assert hostile.integrity(db) == "ok"
    assert hostile.run_cli(command, ENV, tmp_path / "rerun.log") == 0, (tmp_path / "rerun.log").read_text()
    after = hostile.archive_snapshot(db)
    reference = references[point.full_text]
    assert after.integrity == "ok"
    assert (after.duplicate_urls, after.duplicate_guids, after.orphans) == (0, 0, 0)
    missing = reference.keys - after.keys
    assert not missing, f"lost: {sorted(missing)[:3]}"
    assert after.articles == reference.articles, "same articles, titles and texts as an uninterrupted run"


# -- digest sending ---------------------------------------------------------------------------------

MEMBERS = 8
SEND_POINTS = hostile.send_kill_points(MEMBERS, delayed_every=2)


@pytest.fixture(scope="module")
def week_archive(tmp_path_factory):
    """A week of tagged articles and eight members who all have news: the template copied per kill."""
    root = tmp_path_factory.mktemp("send")
    db = root / "template.db"
    with Store.open(db) as store:
        populate(store)
        emails = [store.upsert_member(f"dgs@commune-{i:02d}.fr", f"Direction {i}", f"Commune {i}", None)[0].email
                  for i in range(MEMBERS)]
    return db, sorted(emails)


def send_argv(db: Path, *extra: str) -> list[str]:
    absent = str(db.with_name("absent.yaml"))
    return ["--db", str(db), "--sources", absent, "--config", absent, "digest", "--week", WEEK, "--send", "--json",
            *extra]


def send_env(smtp: SmtpServer, folder: Path) -> dict[str, str]:
    return {**smtp.env(), "VEILLE_SMTP_RATE": "1000", "VEILLE_DIGESTS_DIR": str(folder / "digests"),
            "VEILLE_PUBLIC_URL": f"{BASE}/veille", "VEILLE_MAIL_FROM": "veille@territoires-numeriques.fr"}


def report_of(log: Path) -> dict:
    text = log.read_text()
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


@pytest.mark.slow
@pytest.mark.parametrize("point", SEND_POINTS, ids=[p.label for p in SEND_POINTS])
def test_sending_killed_then_rerun_serves_every_member_exactly_once(week_archive, tmp_path, point):
    template, emails = week_archive
    db = tmp_path / "veille.db"
    shutil.copy(template, db)
    with SmtpServer() as smtp:
        env = send_env(smtp, tmp_path)
        code = hostile.kill_sending_at(smtp, point, send_argv(db), env, tmp_path / "killed.log")
        assert code == -9, (tmp_path / "killed.log").read_text()[-500:]
        at_kill = Counter(r for m in smtp.messages for r in m.rcpt_tos)
        assert hostile.run_cli(send_argv(db), env, tmp_path / "rerun.log") == 0, (tmp_path / "rerun.log").read_text()
        rerun = report_of(tmp_path / "rerun.log")
        received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
        assert max(received.values()) == 1, f"someone got two copies: {received}"
        # Killed in the server's hook, the sender is waiting for the k-th member's reply; killed `delay`
        # later by a timer thread, it may have gone on by a member or more on a loaded machine.
        in_flight = set(emails[point.k - 1:] if point.delay else emails[point.k - 1:point.k])
        assert len(rerun["uncertain"]) <= 1, "at most the member in flight can be uncertain"
        assert set(rerun["uncertain"]) <= in_flight, "only the member in flight can be uncertain"
        if point.stage == "DATA" and not point.delay:
            assert rerun["uncertain"] == [emails[point.k - 1]], "the server had it when the sender died"
        # The operator checks the mail server's log, and forces only those it never received.
        for email in rerun["uncertain"]:
            if received[email] == 0:
                log = tmp_path / f"retry-{email}.log"
                assert hostile.run_cli(send_argv(db, "--retry-uncertain", "--member", email), env, log) == 0
        received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
    assert received == Counter({e: 1 for e in emails}), (point.label, dict(at_kill), rerun)
    with Store.open(db) as store:
        states = Counter(s.status for s in store.delivery_states(WEEK).values())
    assert states["sent"] + states["sending"] == MEMBERS
