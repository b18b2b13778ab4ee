"""Robustness figures: hostile inputs survived, kill points survived, duplicates, losses, peak memory.

One command: `.venv/bin/python bench/robustness.py [--full-text-points N] [--members N]`.

1. Hostile inputs. Every attack of `tests/hostile.py` (`HOSTILE_CASES`: decompression bombs, a server
   trickling one byte per second, endless and looping redirects, loopback addresses and a redirect to
   one with the outbound guard on, billion laughs and external entities in feeds and sitemaps, 100,000
   entries, 50 MB pages, binary served as HTML, hostile article pages, markup/CR-LF/bidi injection) is
   served on 127.0.0.1 and fetched in ONE pass by a separate process (`workers: 1`, so all parsing and
   extraction happen in it); then the injected feed goes through tagging, the digest folder and the
   members' emails. The process reports its peak resident memory (VmHWM).
2. Kill points. A real `veille fetch` over 10 sources x 10 articles is SIGKILLed at each point of
   `fetch_kill_points` (exact requests held in flight, a few ms after a request, at start-up; feeds-only
   and full-text passes), rerun, and compared with an uninterrupted run. `veille digest --send` is
   SIGKILLed at every MAIL/RCPT/DATA of an 8-member batch (and 3 ms after RCPT and DATA), rerun, and the
   members' mailboxes counted on the SMTP server.

Everything talks to 127.0.0.1 (and 127.0.0.2, a second loopback address that plays a public site).
Results are also written to bench/results/robustness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import hostile  # noqa: E402
from tests.httpserver import FixtureServer  # noqa: E402

MEMORY_LIMIT_MB = 300
MIN_KILL_POINTS = 50
"""Issue #7: the fetch pass is killed at this many different points at least."""
INJECTED = "balises-et-en-tetes-injectes"
TOPICS = "topics:\n  cyber:\n    label: Cybersécurité\n    keywords: [cyberattaque, rançongiciel, cybersécurité]\n"


# --------------------------------------------------------------------------------------------------
# 1. Hostile inputs (the measured process)


def hostile_child(work: Path) -> None:
    """Runs in its own process: the hostile pass, then the injected feed through digest and emails.

    Without the injected feed (the baseline run) only the pass runs: its peak memory is veille's own floor.
    """
    from veille.config import default_settings
    from veille.core import Watch
    from veille.digest import iso_week
    from veille.mail import deliver_week
    from veille.store import parse_iso

    settings = default_settings().replace(
        allow_private=False, politeness_delay=0.0, connect_timeout=2.0, read_timeout=5.0, request_deadline=5.0,
        workers=1, concurrency=8, digests_dir=str(work / "digests"), public_url="http://127.0.0.1:9/veille",
        mail_from="veille@territoires-numeriques.fr")
    started = time.monotonic()
    with hostile.public_stand_in(), Watch(db=work / "veille.db", sources=work / "sources.yaml",
                                          topics=work / "topics.yaml", config=None, settings=settings) as watch:
        result = watch.fetch()
        pass_seconds = time.monotonic() - started
        if INJECTED not in {r.source_id for r in result.sources}:
            print(json.dumps({"vm_hwm_kib": hostile.vm_hwm_kib(), "pass_seconds": pass_seconds}))
            return
        store = watch.store
        week = iso_week(parse_iso(store.scalar("SELECT max(published_at) FROM articles WHERE source_id = ?",
                                               (INJECTED,))))
        store.upsert_member("alice.martin@mairie-villebois.fr", "Alice Martin", "Mairie de Villebois", None)
        store.upsert_member("bruno.leroy@cc-vallon.fr", "Bruno Leroy", "CC du Vallon", ["cyber"])
        report = deliver_week(store, week, settings, watch.load_sources(), send=False)
    folder = Path(report.folder)
    documents = {n: (folder / n).read_text(encoding="utf-8") for n in ("index.html", "digest.md", "digest.json")}
    emails = [p.read_bytes() for p in sorted(Path(report.outbox).glob("*.eml"))]
    problems = hostile.injection_problems(documents, emails)
    if len(emails) != 2 or "Cyberattaque à Villebois" not in documents["index.html"]:
        problems.append(f"the hostile items did not reach the digest ({len(emails)} emails)")
    print(json.dumps({
        "sources": [{k: getattr(r, k) for k in ("source_id", "status", "reason", "error", "hint", "new", "duration")}
                    for r in result.sources],
        "injection": problems,
        "pass_seconds": round(pass_seconds, 1),
        "vm_hwm_kib": hostile.vm_hwm_kib(),
    }))


def _child(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILLE_")}  # the guard is on
    child = subprocess.run([sys.executable, __file__, "--hostile-child", str(work)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    if child.returncode != 0:
        raise SystemExit(f"the hostile pass crashed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def run_hostile(work: Path, per_input: bool) -> dict:
    (work / "baseline").mkdir(parents=True, exist_ok=True)
    alone: dict[str, float] = {}
    with FixtureServer() as server, FixtureServer(host=hostile.PUBLIC_STAND_IN) as public:
        hostile.battery_sources(work / "baseline" / "sources.yaml", server, public, cases=())
        (work / "baseline" / "topics.yaml").write_text(TOPICS, encoding="utf-8")
        baseline = _child(work / "baseline")
        for case in hostile.HOSTILE_CASES if per_input else ():
            folder = work / "alone" / case.name
            folder.mkdir(parents=True)
            hostile.battery_sources(folder / "sources.yaml", server, public, cases=(case,))
            (folder / "topics.yaml").write_text(TOPICS, encoding="utf-8")
            alone[case.name] = _child(folder)["vm_hwm_kib"] / 1024
        hostile.battery_sources(work / "sources.yaml", server, public)
        (work / "topics.yaml").write_text(TOPICS, encoding="utf-8")
        data = _child(work)
        result = SimpleNamespace(sources=[SimpleNamespace(**s) for s in data["sources"]])
        verdicts = hostile.battery_verdicts(result, work / "veille.db", server)
        reached = bool(server.hits("/h/interne.xml") or server.hits("/h/interne-3.xml"))
        if reached:
            verdicts = {k: v or "a guarded source reached the loopback server" if "bouclage" in k else v
                        for k, v in verdicts.items()}
    verdicts["injection-jusqu-au-digest-et-aux-emails"] = "; ".join(data["injection"]) or None
    by_id = {s["source_id"]: s for s in data["sources"]}
    return {"verdicts": verdicts, "sources": by_id, "vm_hwm_mb": data["vm_hwm_kib"] / 1024,
            "baseline_mb": baseline["vm_hwm_kib"] / 1024, "alone_mb": alone, "pass_seconds": data["pass_seconds"]}


# --------------------------------------------------------------------------------------------------
# 2. Kill points

FETCH_ENV = {"VEILLE_ALLOW_PRIVATE": "1", "VEILLE_WORKERS": "1", "VEILLE_POLITENESS_DELAY": "0",
             "VEILLE_PER_HOST_CONCURRENCY": "2", "VEILLE_REQUEST_DEADLINE": "20"}


def run_fetch_kills(work: Path, full_text_points: int) -> dict:
    sources_n, entries = 10, 10
    points = hostile.fetch_kill_points(sources_n, sources_n * (entries + 1) + 1, full_text_points)
    out = {"points": len(points), "landed": 0, "survived": 0, "duplicates": 0, "losses": 0, "failures": [],
           "stored_at_kill": Counter()}
    with FixtureServer() as server:
        corpus = hostile.PressCorpus(server, sources_n, entries)
        sources = corpus.sources_yaml(work / "sources.yaml")

        def argv(db: Path, full_text: bool) -> list[str]:
            return ["--db", str(db), "--sources", str(sources), "--topics", str(work / "none.yaml"),
                    "--config", str(work / "none.yaml"), "fetch", *([] if full_text else ["--no-full-text"])]

        references = {}
        for full_text in (False, True):
            db = work / f"reference-{full_text}.db"
            assert hostile.run_cli(argv(db, full_text), FETCH_ENV, work / "reference.log") == 0
            references[full_text] = hostile.archive_snapshot(db)
        for i, point in enumerate(points):
            db = work / f"kill-{i}.db"
            code = hostile.kill_at(server, point, argv(db, point.full_text), FETCH_ENV, work / "kill.log")
            if code != -9:
                out["failures"].append(f"{point.label}: the kill did not land (exit {code})")
                continue
            out["landed"] += 1
            stored = len(hostile.archive_snapshot(db).articles) if db.exists() and _migrated(db) else 0
            out["stored_at_kill"][stored] += 1
            healthy_before = not db.exists() or hostile.integrity(db) == "ok"
            rerun = hostile.run_cli(argv(db, point.full_text), FETCH_ENV, work / "rerun.log")
            after = hostile.archive_snapshot(db)
            reference = references[point.full_text]
            duplicates = after.duplicate_urls + after.duplicate_guids + after.orphans
            losses = len(reference.keys - after.keys)
            out["duplicates"] += duplicates
            out["losses"] += losses
            ok = (healthy_before and rerun == 0 and after.integrity == "ok" and not duplicates and not losses
                  and after.articles == reference.articles)
            out["survived"] += ok
            if not ok:
                out["failures"].append(f"{point.label}: rerun {rerun}, integrity {after.integrity}, "
                                       f"{duplicates} duplicates, {losses} lost")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    return out


def _migrated(db: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'articles'").fetchone()[0] == 1
    finally:
        conn.close()


def run_send_kills(work: Path, members: int) -> dict:
    from tests.digestdata import BASE, WEEK, populate
    from tests.smtpserver import SmtpServer
    from veille.store import Store

    template = work / "template.db"
    with Store.open(template) as store:
        populate(store)
        emails = sorted(store.upsert_member(f"dgs@commune-{i:02d}.fr", f"Direction {i}", f"Commune {i}", None)[0].email
                        for i in range(members))
    points = hostile.send_kill_points(members)
    out = {"points": len(points), "landed": 0, "survived": 0, "duplicates": 0, "losses": 0, "failures": [],
           "uncertain_received": 0, "uncertain_not_received": 0}
    for i, point in enumerate(points):
        db = work / f"send-{i}.db"
        shutil.copy(template, db)
        absent = str(work / "absent.yaml")
        command = ["--db", str(db), "--sources", absent, "--config", absent, "digest", "--week", WEEK, "--send",
                   "--json"]
        with SmtpServer() as smtp:
            env = {**smtp.env(), "VEILLE_SMTP_RATE": "1000", "VEILLE_DIGESTS_DIR": str(work / f"digests-{i}"),
                   "VEILLE_PUBLIC_URL": f"{BASE}/veille", "VEILLE_MAIL_FROM": "veille@territoires-numeriques.fr"}
            code = hostile.kill_sending_at(smtp, point, command, env, work / "send-kill.log")
            if code != -9:
                out["failures"].append(f"{point.label}: the kill did not land (exit {code})")
                continue
            out["landed"] += 1
            log = work / "send-rerun.log"
            log.unlink(missing_ok=True)
            rerun = hostile.run_cli(command, env, log)
            text = log.read_text()
            report = json.loads(text[text.index("{"):text.rindex("}") + 1])
            received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
            for email in report["uncertain"]:  # the operator checks the server's log, forces the missing ones
                if received[email]:
                    out["uncertain_received"] += 1
                else:
                    out["uncertain_not_received"] += 1
                    hostile.run_cli([*command, "--retry-uncertain", "--member", email], env, work / "send-retry.log")
            received = Counter(r for m in smtp.messages for r in m.rcpt_tos)
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        losses = sum(1 for e in emails if received[e] == 0)
        out["duplicates"] += duplicates
        out["losses"] += losses
        ok = rerun == 0 and not duplicates and not losses
        out["survived"] += ok
        if not ok:
            out["failures"].append(f"{point.label}: rerun {rerun}, {duplicates} duplicates, {losses} not served")
    return out


# --------------------------------------------------------------------------------------------------
# Report


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "| " + " | ".join("-" * w for w in widths) + " |"
    out = []
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if n == 0:
            out.append(line)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-text-points", type=int, default=24, help="full-text fetch kill points (default 24)")
    parser.add_argument("--members", type=int, default=8, help="members in the killed digest batch (default 8)")
    parser.add_argument("--skip-kills", action="store_true", help="only the hostile inputs")
    parser.add_argument("--no-per-input", action="store_true",
                        help="skip measuring each hostile input's peak memory in a process of its own")
    parser.add_argument("--hostile-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hostile_child:
        hostile_child(args.hostile_child)
        return
    work = Path(tempfile.mkdtemp(prefix="veille-robustness-"))
    t0 = time.monotonic()
    progress = sys.stdout
    sys.stderr = open(work / "servers.log", "w")  # the test servers' complaints about clients that hung up
    print("hostile inputs...", file=progress, flush=True)
    h = run_hostile(work / "hostile", per_input=not args.no_per_input)
    survived = sum(1 for v in h["verdicts"].values() if v is None)
    fetch = send = None
    if not args.skip_kills:
        print("fetch kill points...", file=progress, flush=True)
        (work / "fetch").mkdir()
        fetch = run_fetch_kills(work / "fetch", args.full_text_points)
        print("sending kill points...", file=progress, flush=True)
        (work / "send").mkdir()
        send = run_send_kills(work / "send", args.members)

    print("\nHostile inputs (one pass, all at once, guard on; then digest and emails):\n")
    rows = [("input", "outcome", "survived", "peak MB alone")]
    for name, verdict in h["verdicts"].items():
        source = h["sources"].get(name)
        outcome = (f"{source['status']}" + (f" ({source['reason']})" if source["reason"] else "")
                   + (f", {source['new']} stored" if source["status"] == "ok" else "")) if source else "outbox checked"
        peak = h["alone_mb"].get(name)
        rows.append((name, outcome, "yes" if verdict is None else f"NO: {verdict}", f"{peak:.0f}" if peak else "-"))
    print(table(rows))

    print("\nSummary:\n")
    rows = [("measure", "result", "target"),
            ("hostile inputs tried / survived", f"{len(h['verdicts'])} / {survived}", "all survived"),
            ("peak memory (VmHWM) of the hostile pass", f"{h['vm_hwm_mb']:.0f} MB (healthy pass alone: "
             f"{h['baseline_mb']:.0f} MB)", f"< {MEMORY_LIMIT_MB} MB"),
            ("hostile pass duration", f"{h['pass_seconds']:.1f} s", "bounded by the deadlines")]
    if fetch and send:
        rows += [
            ("fetch kill points survived", f"{fetch['survived']} / {fetch['points']} (archive held "
             f"{min(fetch['stored_at_kill'])}-{max(fetch['stored_at_kill'])} of 100 articles at the kill)",
             f">= {MIN_KILL_POINTS}, all survived"),
            ("digest sending kill points survived", f"{send['survived']} / {send['points']} "
             f"({send['uncertain_received']} uncertain+received, {send['uncertain_not_received']} "
             "uncertain+forced)", "all survived"),
            ("duplicates found", str(fetch["duplicates"] + send["duplicates"]), "0"),
            ("losses found", str(fetch["losses"] + send["losses"]), "0"),
        ]
    print(table(rows))
    print(f"\n{time.monotonic() - t0:.0f} s in all; work files in {work}")
    failures = (fetch or {}).get("failures", []) + (send or {}).get("failures", [])
    for failure in failures:
        print("FAILED", failure)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    fetch_out = dict(fetch or {}, stored_at_kill=dict((fetch or {}).get("stored_at_kill", {})))
    (results / "robustness.json").write_text(json.dumps(
        {"hostile": {k: v for k, v in h.items()}, "fetch_kills": fetch_out, "send_kills": send},
        ensure_ascii=False, indent=2, default=str))
    ok = (survived == len(h["verdicts"]) and h["vm_hwm_mb"] < MEMORY_LIMIT_MB and not failures
          and (fetch is None or fetch["points"] >= MIN_KILL_POINTS))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
