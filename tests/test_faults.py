"""Faults around the pipeline: a locked database, a full disk, an SMTP server that goes away, garbage YAML.

Each fault must give a clear error (what failed, where, what to do), lose nothing already stored, and
leave the next run able to finish the job.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import veille.store
from veille.core import Watch
from veille.errors import ConfigError, MailError, StoreError
from veille.mail import deliver_week
from veille.store import Store

from . import hostile
from .digestdata import BASE, SOURCES, WEEK, populate
from .smtpserver import Script, SmtpServer

PASS_ENV = {"VEILLE_ALLOW_PRIVATE": "1", "VEILLE_WORKERS": "1", "VEILLE_POLITENESS_DELAY": "0",
            "VEILLE_REQUEST_DEADLINE": "10"}


@pytest.fixture
def corpus(http_server):
    return hostile.PressCorpus(http_server, sources=3, entries=5)


def open_watch(tmp_path: Path, settings, sources: Path, db: str = "veille.db") -> Watch:
    return Watch(db=tmp_path / db, sources=sources, topics=tmp_path / "none.yaml", config=None, settings=settings)


def expected_keys(corpus: hostile.PressCorpus) -> set[str]:
    return {corpus.url(item) for item in corpus.items}


def assert_whole_batches(snapshot: hostile.Snapshot, corpus: hostile.PressCorpus) -> None:
    """Each source's pass is one transaction: all of its articles are stored, or none."""
    per_source: dict[str, int] = {}
    for article in snapshot.articles:
        per_source[article[0]] = per_source.get(article[0], 0) + 1
    entries = len(corpus.items) // corpus.sources
    assert set(per_source.values()) <= {entries}, per_source
    assert len(per_source) < corpus.sources, "the fault did stop the pass"


# -- a locked database --------------------------------------------------------------------------------


def test_a_long_analyst_read_does_not_block_the_pass(tmp_path, settings, corpus):
    sources = corpus.sources_yaml(tmp_path / "sources.yaml")
    with open_watch(tmp_path, settings, sources) as watch:
        watch.fetch(["journal-0"], full_text=False)
        analyst = Store.open(tmp_path / "veille.db", readonly=True)
        try:
            analyst.conn.execute("BEGIN")
            before = analyst.scalar("SELECT count(*) FROM articles")  # the read transaction starts here
            result = watch.fetch(full_text=False)
            assert {r.status for r in result.sources} == {"ok", "not_modified"}
            assert analyst.scalar("SELECT count(*) FROM articles") == before, "the analyst keeps a stable snapshot"
            analyst.conn.execute("COMMIT")
            assert analyst.scalar("SELECT count(*) FROM articles") == len(corpus.items)
        finally:
            analyst.close()


def test_a_write_lock_held_elsewhere_is_a_clear_error_and_the_next_run_recovers(tmp_path, settings, corpus,
                                                                                http_server):
    """Another process takes an exclusive lock while the pass runs: the pass stops with a StoreError naming
    the database and what to do; what was stored before is intact; the next run stores the rest."""
    sources = corpus.sources_yaml(tmp_path / "sources.yaml")
    db = tmp_path / "veille.db"
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    taken = threading.Event()

    def take_lock_at_third_feed(request) -> None:
        if request.path.endswith("s2/flux.xml") and not taken.is_set():
            deadline = time.monotonic() + 10  # sources are fetched concurrently: wait for a first commit
            while time.monotonic() < deadline and not locker.execute("SELECT count(*) FROM articles").fetchone()[0]:
                time.sleep(0.02)
            locker.execute("BEGIN EXCLUSIVE")
            taken.set()

    with open_watch(tmp_path, settings.replace(concurrency=1), sources) as watch:
        watch.store.conn.execute("PRAGMA busy_timeout = 300")
        watch.store.sync_sources(watch.load_sources())
        http_server.on_request = take_lock_at_third_feed
        with pytest.raises(StoreError) as info:
            watch.fetch(full_text=False)
        http_server.on_request = None
    message = str(info.value)
    assert str(db) in message and "locked" in message and "retry when it is done" in message
    stored = {r[0] for r in locker.execute("SELECT canonical_url FROM articles")}
    assert stored and stored < expected_keys(corpus), "the sources before the lock are kept"
    assert_whole_batches(hostile.archive_snapshot(db), corpus)
    locker.execute("ROLLBACK")
    locker.close()
    with open_watch(tmp_path, settings, sources) as watch:
        watch.fetch(full_text=False)
    snapshot = hostile.archive_snapshot(db)
    assert snapshot.integrity == "ok" and snapshot.keys == expected_keys(corpus)
    assert snapshot.duplicate_urls == snapshot.duplicate_guids == snapshot.orphans == 0


# -- a full disk ------------------------------------------------------------------------------------


def test_a_full_database_is_a_clear_error_and_the_next_run_recovers(tmp_path, settings, corpus, monkeypatch):
    """SQLite's own limit (`max_page_count`) makes the disk full for this connection only. On 4 KB pages
    (an archive created before veille used 16 KB ones): the rest of this small corpus would fit in the
    free room of the pages of a 16 KB archive."""
    monkeypatch.setattr(veille.store, "PAGE_SIZE", 4096)
    sources = corpus.sources_yaml(tmp_path / "sources.yaml")
    db = tmp_path / "veille.db"
    with open_watch(tmp_path, settings, sources) as watch:
        watch.fetch(["journal-0"], full_text=False)
        first = hostile.archive_snapshot(db).articles
        pages = watch.store.scalar("PRAGMA page_count")
        for store in (watch.store, watch.writer_store()):  # both connections that write
            store.conn.execute(f"PRAGMA max_page_count = {int(pages)}")  # not one page more
        with pytest.raises(StoreError) as info:
            watch.fetch(full_text=False)
    message = str(info.value)
    assert str(db) in message and "full" in message and "free disk space" in message
    assert "everything stored before it is intact" in message
    snapshot = hostile.archive_snapshot(db)
    assert snapshot.integrity == "ok" and set(first) <= set(snapshot.articles), "earlier data intact"
    assert_whole_batches(snapshot, corpus)
    with open_watch(tmp_path, settings, sources) as watch:  # space freed: a new connection has no limit
        watch.fetch(full_text=False)
    snapshot = hostile.archive_snapshot(db)
    assert snapshot.keys == expected_keys(corpus) and snapshot.duplicate_urls == 0


def test_cli_on_a_size_limited_file_fails_cleanly_then_recovers(tmp_path, corpus):
    """A real `veille fetch` whose files may not grow much: one clear line, exit 1, no traceback."""
    sources = corpus.sources_yaml(tmp_path / "sources.yaml")
    db = tmp_path / "veille.db"
    argv = ["--db", str(db), "--sources", str(sources), "--topics", str(tmp_path / "none.yaml"),
            "--config", str(tmp_path / "none.yaml"), "fetch"]
    assert hostile.run_cli([*argv, "--source", "journal-0", "--no-full-text"], PASS_ENV, tmp_path / "first.log") == 0
    first = hostile.archive_snapshot(db).articles
    log = tmp_path / "full.log"
    process = hostile.cli_process(argv, PASS_ENV, log, file_size_limit=16 * 1024)  # not one page of WAL
    process.join(120)
    output = log.read_text()
    assert process.exitcode == 1, output
    assert "Traceback" not in output
    assert f"error: database {db}" in output and ("full" in output or "disk I/O" in output)
    snapshot = hostile.archive_snapshot(db)
    assert snapshot.integrity == "ok" and set(first) <= set(snapshot.articles)
    assert hostile.run_cli(argv, PASS_ENV, tmp_path / "again.log") == 0
    assert hostile.archive_snapshot(db).keys == expected_keys(corpus)


# -- the SMTP server goes away --------------------------------------------------------------------------


@pytest.fixture
def msettings(settings, tmp_path):
    return settings.replace(digests_dir=str(tmp_path / "digests"), public_url=f"{BASE}/veille", smtp_rate=1000.0,
                            mail_from="veille@territoires-numeriques.fr")


def members(store: Store, n: int) -> list[str]:
    return [store.upsert_member(f"secretariat@mairie-{i}.fr", f"Secrétariat {i}", f"Mairie {i}", None)[0].email
            for i in range(n)]


def test_smtp_server_vanishing_mid_batch_loses_no_one_and_sends_no_one_twice(store, msettings):
    populate(store)
    emails = members(store, 6)
    got: dict[str, int] = {}
    first = SmtpServer().start()
    stopper = threading.Thread(target=first.stop)
    first.script = Script(hook_at=("MAIL", 4), hook=stopper.start)  # the server shuts down on the 4th message
    with pytest.raises(MailError) as info:
        deliver_week(store, WEEK, msettings.replace(smtp_host=first.host, smtp_port=first.port), SOURCES, send=True,
                     retries=1, backoff=0)
    stopper.join()
    assert "cannot talk to the SMTP server" in str(info.value) and "nothing was lost" in str(info.value)
    report = info.value.report
    assert len(report.sent) == 3 and report.uncertain == ()
    for r in first.messages:
        got[r.rcpt_tos[0]] = got.get(r.rcpt_tos[0], 0) + 1
    with SmtpServer() as second:
        rerun = deliver_week(store, WEEK, msettings.replace(smtp_host=second.host, smtp_port=second.port), SOURCES,
                             send=True)
        for r in second.messages:
            got[r.rcpt_tos[0]] = got.get(r.rcpt_tos[0], 0) + 1
    assert sorted(rerun.sent) == sorted(set(emails) - set(report.sent))
    assert got == {e: 1 for e in emails}


def test_smtp_refusing_everything_with_5xx_bounces_each_once_and_keeps_them_out_of_reruns(store, msettings):
    populate(store)
    emails = members(store, 3)
    with SmtpServer(Script(reject_data=set(emails))) as server:
        settings = msettings.replace(smtp_host=server.host, smtp_port=server.port)
        report = deliver_week(store, WEEK, settings, SOURCES, send=True)
        assert sorted(e for e, _ in report.bounced) == sorted(emails)
        assert all("554" in error for _, error in report.bounced)
        server.script = Script()
        rerun = deliver_week(store, WEEK, settings, SOURCES, send=True)
        assert rerun.sent == () and sorted(rerun.already) == sorted(emails)
        assert server.messages == []


def test_cli_with_smtp_down_exits_1_with_the_fix(tmp_path, store):
    populate(store)
    members(store, 2)
    store.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"VEILLE_SMTP_HOST": "127.0.0.1", "VEILLE_SMTP_PORT": str(port), "VEILLE_MAIL_FROM": "veille@exemple.fr",
           "VEILLE_DIGESTS_DIR": str(tmp_path / "digests"), "VEILLE_PUBLIC_URL": f"{BASE}/veille"}
    log = tmp_path / "digest.log"
    code = hostile.run_cli(["--db", str(tmp_path / "veille.db"), "--sources", str(tmp_path / "absent.yaml"),
                            "--config", str(tmp_path / "absent.yaml"), "digest", "--week", WEEK, "--send"], env, log)
    output = log.read_text()
    assert code == 1 and "Traceback" not in output
    assert f"cannot talk to the SMTP server 127.0.0.1:{port}" in output and "VEILLE_SMTP_HOST" in output
    with Store.open(tmp_path / "veille.db") as reopened:
        assert {s.status for s in reopened.delivery_states(WEEK).values()} <= {"empty", "failed"}


# -- configuration files replaced by garbage -------------------------------------------------------------

GARBAGE = {
    "binary": bytes(range(256)) * 4,
    "tabs": b"sources:\n\t- id: x\n",
    "unclosed": b"sources: [ {id: gazette, url: http://127.0.0.1:9/\n",
    "list": b"- un\n- deux\n",
    "scalar": b"n'importe quoi\n",
    "utf16": "sources:\n  - id: é\n".encode("utf-16"),
    "half": b"defaults: {interval: 1h}\nsources:\n  - id: journal-0\n    name: Journal\n    type: feed\n    url: http",
}


def db_digest(db: Path) -> str:
    """Content of the archive (every row of every table), independent of page layout."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize("which", ["sources", "topics", "config"])
def test_garbage_yaml_is_exit_2_with_file_and_line_and_the_archive_untouched(tmp_path, corpus, which, garbage):
    files = {"sources": corpus.sources_yaml(tmp_path / "sources.yaml"), "topics": tmp_path / "topics.yaml",
             "config": tmp_path / "veille.yaml"}
    files["topics"].write_text("topics:\n  cyber:\n    label: Cybersécurité\n    keywords: [cyberattaque]\n")
    files["config"].write_text("section_cap: 8\n")
    db = tmp_path / "veille.db"
    argv = ["--db", str(db), "--sources", str(files["sources"]), "--topics", str(files["topics"]),
            "--config", str(files["config"]), "fetch", "--no-full-text"]
    assert hostile.run_cli(argv, PASS_ENV, tmp_path / "ok.log") == 0
    before = db_digest(db)
    good = files[which].read_bytes()
    files[which].write_bytes(GARBAGE[garbage])
    log = tmp_path / "garbage.log"
    code = hostile.run_cli(argv, PASS_ENV, log)
    output = log.read_text()
    assert code == 2, output
    assert "Traceback" not in output
    assert f"error: {files[which]}" in output, output
    assert db_digest(db) == before, "a bad configuration never touches the archive"
    files[which].write_bytes(good)
    assert hostile.run_cli(argv, PASS_ENV, tmp_path / "again.log") == 0


def test_a_reloading_daemon_keeps_the_last_good_configuration(tmp_path, settings, corpus):
    sources = corpus.sources_yaml(tmp_path / "sources.yaml")
    good = sources.read_bytes()
    with open_watch(tmp_path, settings, sources) as watch:
        watch.reload()
        sources.write_bytes(GARBAGE["unclosed"])
        with pytest.raises(ConfigError) as info:
            watch.reload()
        assert info.value.path == str(sources) and info.value.line
        result = watch.fetch(full_text=False)  # still running on the previous sources
        assert len(result.sources) == 3 and {r.status for r in result.sources} == {"ok"}
        sources.write_bytes(good.replace(b"Journal 0", b"Journal zero"))
        watch.reload()
        assert watch.load_sources()[0].name == "Journal zero"
