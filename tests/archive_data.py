"""A small invented French archive for the analysts' tests (search, export, trends, Datasette).

Articles go in through the real ingestion API (`Store.sync_sources`, `Store.save_source_batch`), so the
FTS triggers and the views see what production sees. Topics are stored as the topic engine stores them.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from veille import dedupe
from veille.store import Store, iso
from veille.store.articles import FetchLog
from veille.types import Article, Source

UTC = timezone.utc

SOURCES = [
    Source(id="gazette", name="La Gazette des communes", type="feed", url="http://127.0.0.1:9/gazette.xml"),
    Source(id="localtis", name="Localtis", type="feed", url="http://127.0.0.1:9/localtis.xml"),
    Source(id="ouest", name="Ouest-France", type="feed", url="http://127.0.0.1:9/ouest.xml"),
]

TOPICS = [
    ("open-data", "Open data"),
    ("cybersecurite", "Cybersécurité"),
    ("rip-thd", "Réseaux d'initiative publique et très haut débit"),
    ("smart-city", "Smart city et territoire intelligent"),
    ("inclusion-numerique", "Inclusion numérique"),
]

_OPEN_DATA_TEXT = (
    "La métropole de Rennes a mis en ligne mardi un nouveau portail consacré à ses données publiques. "
    "Horaires des bus, consommation énergétique des écoles, subventions aux associations : plus de deux "
    "cents jeux de données sont désormais téléchargeables sous licence ouverte. La vice-présidente chargée "
    "du numérique rappelle que l'ouverture des données est une obligation légale pour les collectivités "
    "de plus de 3 500 habitants depuis la loi pour une République numérique. Les services ont recensé les "
    "fichiers existants, puis les ont nettoyés avant publication. Une équipe de trois agents anime le "
    "portail et répond aux réutilisateurs, entreprises, chercheurs ou simples curieux."
)

# (key, source, days before END, title, summary, text, topics {id: score})
ARTICLES = [
    ("rennes-open-data", "gazette", 1, "Rennes ouvre ses données publiques sur un nouveau portail",
     "La métropole publie plus de deux cents jeux de données sous licence ouverte.", _OPEN_DATA_TEXT,
     {"open-data": 9}),
    ("rennes-open-data-bis", "ouest", 1, "Rennes : la métropole ouvre ses données publiques",
     "Un portail recense désormais les jeux de données de la métropole.", _OPEN_DATA_TEXT,
     {"open-data": 8}),
    ("hopital-brest", "ouest", 2, "Cyberattaque : l'hôpital de Brest paralysé par un rançongiciel",
     "Les urgences fonctionnent en mode dégradé depuis samedi.",
     "Un rançongiciel a chiffré une partie des serveurs du centre hospitalier. L'ANSSI est sur place.\n\n"
     "Les équipes ont ressorti le \"papier\" et les crayons ; la cybersécurité des hôpitaux revient au cœur "
     "des débats du conseil de surveillance.",
     {"cybersecurite": 6}),
    ("fibre-finistere", "localtis", 3, "Le très haut débit arrive dans les communes rurales du Finistère",
     "Le réseau d'initiative publique raccordera 40 000 foyers d'ici 2027.",
     "Le syndicat mixte Mégalis poursuit le déploiement de la fibre optique. Les élus saluent un réseau "
     "d'initiative publique qui couvre les zones que les opérateurs privés délaissaient.",
     {"rip-thd": 7}),
    ("angers-capteurs", "gazette", 9, "Smart city : Angers déploie ses capteurs connectés",
     "La ville intelligente selon Angers passe par l'éclairage public.",
     "Angers Loire Métropole installe des capteurs sur l'éclairage public et les réseaux d'eau. Le projet de "
     "territoire intelligent est piloté depuis un hyperviseur urbain.",
     {"smart-city": 8}),
    ("conseillers-numeriques", "localtis", 10, "Inclusion numérique : les conseillers numériques confortés",
     "Les France services accueillent toujours plus d'usagers.",
     "La médiation numérique reste une priorité : 4 000 conseillers numériques accompagnent les habitants "
     "éloignés des démarches en ligne. La fracture numérique touche d'abord les personnes âgées.",
     {"inclusion-numerique": 7}),
    ("rgpd-maires", "gazette", 16, "Donnée publique et protection des données : ce que doivent savoir les maires",
     "Ouvrir une donnée publique n'exonère pas du RGPD.",
     "Avant de publier une donnée publique, la commune vérifie qu'elle ne contient pas de données "
     "personnelles. La CNIL publie un guide à destination des élus.",
     {"open-data": 3}),
    ("tripartite", "ouest", 17, "Accord tripartite pour la rénovation du gymnase de Quimper",
     "La commune, le département et la région financent les travaux.",
     "Un accord tripartite a été signé vendredi. Les travaux du gymnase commenceront au printemps.",
     {}),
    ("jeu-video", "ouest", 23, "Un jeu vidéo sur la cybersécurité pour sensibiliser les collégiens",
     "Le département du Morbihan lance un serious game.",
     "Dans ce jeu vidéo, les élèves déjouent des tentatives d'hameçonnage. La cybersécurité s'apprend "
     "aussi en jouant. Les fiches pédagogiques sont reprises du site cyber.gouv.fr/anssi.",
     {"cybersecurite": 2}),
    ("cyber-communes", "gazette", 24, "Les petites communes face aux cyberattaques",
     "Une commune sur dix a déjà subi une cyberattaque.",
     "Faute de moyens, les petites communes mutualisent leur cybersécurité avec le centre de gestion. "
     "Le rançongiciel reste la première menace.",
     {"cybersecurite": 7}),
    ("dijon-hyperviseur", "localtis", 30, "Dijon, pionnière de la ville intelligente, dresse un premier bilan",
     "Le poste de pilotage connecté a six ans.",
     "Le projet OnDijon a réuni dans un même poste de pilotage les feux, l'éclairage et la vidéoprotection. "
     "La smart city dijonnaise inspire d'autres métropoles.",
     {"smart-city": 8}),
    ("open-data-departement", "localtis", 31, "Le département de la Gironde publie ses marchés publics en open data",
     "Les données essentielles des marchés sont en ligne.",
     "Le département publie les données essentielles de ses marchés publics sur data.gouv.fr. L'open data "
     "des achats publics progresse lentement.",
     {"open-data": 6}),
]

END = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
"""Thursday of 2026-W48: the fixture's "now"."""


def build(path: Path) -> dict[str, int]:
    """Create the archive at `path`; returns article ids by key."""
    store = Store.open(path)
    try:
        store.sync_sources(SOURCES)
        now = iso(END)
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO topics (id, label, position, rule_hash, rule_json, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(tid, label, pos, f"hash-{tid}", json.dumps({"keywords": [label]}, ensure_ascii=False), now)
                 for pos, (tid, label) in enumerate(TOPICS)])
        ids: dict[str, int] = {}
        for key, source_id, days, title, summary, text, _topics in ARTICLES:
            published = END - timedelta(days=days)
            url = f"http://127.0.0.1:9/{source_id}/{key}.html"
            article = Article(
                source_id=source_id, url=url, canonical_url=url, title=title, text=text, text_source="page",
                published_at=published, fetched_at=published + timedelta(minutes=20), guid=key, summary=summary,
                lang="fr", urls=(url,), simhash=dedupe.simhash(text, min_words=20),
            )
            log = FetchLog(source_id=source_id, url=f"http://127.0.0.1:9/{source_id}.xml",
                           started_at=published + timedelta(minutes=20), duration_ms=120, status=200)
            result = store.save_source_batch(source_id, [article], log, [])
            ids[key] = (result.new_ids or result.updated_ids)[0]
        tag_rows = []
        for key, *_rest, topics in ARTICLES:
            for topic_id, score in topics.items():
                hits = [{"keyword": topic_id, "field": "title", "text": key}]
                tag_rows.append((ids[key], topic_id, score, json.dumps(hits), f"hash-{topic_id}", now))
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", tag_rows)
        return ids
    finally:
        store.close()


def build_old(path: Path, version: int) -> dict[str, int]:
    """The same archive as a database whose schema stopped at migration `version`: what an older veille
    left behind. Built at the current schema, then its rows copied (shared columns) into a database
    migrated only that far, whose own triggers of the time fire on the way in."""
    from veille.store.schema import MIGRATIONS

    full = path.with_name(path.name + ".full")
    ids = build(full)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for number, _name, sql in MIGRATIONS[:version]:
            conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("ATTACH DATABASE ? AS full", (str(full),))
        conn.execute("BEGIN")
        for (table,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table' "
                                     "AND sql NOT LIKE 'CREATE VIRTUAL%' AND name NOT LIKE '%fts%' "
                                     "AND name NOT LIKE 'sqlite_%' AND name NOT IN ('topic_article_weeks') ORDER BY rootpage").fetchall():
            columns = ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_info({table})"))
            conn.execute(f"INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} FROM full.{table}")
        conn.execute("COMMIT")
    finally:
        conn.close()
    for leftover in path.parent.glob(full.name + "*"):
        leftover.unlink()
    return ids


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The invented archive, built once per test module."""
    path = tmp_path_factory.mktemp("archive") / "veille.db"
    build(path)
    return path


@pytest.fixture
def ro(archive: Path):
    """The archive opened read-only, as analysts' commands open it."""
    store = Store.open(archive, readonly=True)
    yield store
    store.close()
