"""An invented week of French local-government news (ISO week 2026-W48) for the digest and mail tests.

Articles go in through the real ingestion API (`Store.sync_sources`, `Store.save_source_batch`); topics
and tags are written as the topic engine writes them (rows of `topics` and `article_topics`), so the
digest does not depend on the engine. Every URL points at 127.0.0.1:9 (discard port): data, never fetched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from veille.store import Store, iso
from veille.store.articles import FetchLog
from veille.types import Article, Source

UTC = timezone.utc
WEEK = "2026-W48"  # Monday 23 to Sunday 29 November 2026
BASE = "http://127.0.0.1:9"

SOURCES = [
    Source(id="gazette", name="La Gazette des communes", type="feed", url=f"{BASE}/gazette.xml"),
    Source(id="courrier", name="Le Courrier des maires", type="feed", url=f"{BASE}/courrier.xml"),
    Source(id="acteurs", name="Acteurs publics", type="feed", url=f"{BASE}/acteurs.xml", excerpt="none"),
    Source(id="etalab", name="Blog d'Etalab", type="feed", url=f"{BASE}/etalab.xml", excerpt="full",
           licence="Licence Ouverte 2.0 (Etalab)"),
    Source(id="banque", name="Banque des Territoires", type="feed", url=f"{BASE}/banque.xml", excerpt="full",
           licence="© Caisse des dépôts, tous droits réservés"),
]

TOPICS = [
    ("cyber", "Cybersécurité"),
    ("donnees", "Données et open data"),
    ("sobriete", "Numérique responsable"),
    ("inclusion", "Inclusion numérique"),
]

CYBER_TEXT = (
    "Crédit photo : Agglomération du Grand Vallon\n\n"
    "Les services de la communauté d'agglomération du Grand Vallon fonctionnent en mode dégradé depuis lundi. "
    "Un rançongiciel a chiffré les serveurs de l'état civil, de l'urbanisme et de la facturation de l'eau. "
    "La collectivité a porté plainte et prévenu l'ANSSI ainsi que la CNIL. "
    "Les agents ressortent les registres papier pour accueillir les habitants.\n\n"
    "Partager sur Facebook | Twitter | LinkedIn\n\n"
    "Le CERT-FR rappelle que les collectivités restent une cible privilégiée des groupes cybercriminels."
)
LONG_LEAD = (
    "La Banque des Territoires lance un appel à projets doté de 20 millions d'euros pour aider les communes "
    "rurales à mesurer puis réduire l'empreinte environnementale de leurs équipements numériques, des écoles "
    "aux mairies en passant par les médiathèques et les services techniques, avec un accompagnement "
    "personnalisé par des bureaux d'études agréés et un suivi annuel des consommations électriques publié "
    "en données ouvertes sur le portail national. Les dossiers sont attendus avant le 15 mars."
)


@dataclass(frozen=True)
class Doc:
    key: str
    source: str
    title: str
    summary: str
    text: str
    published: datetime
    topics: dict[str, tuple[int, tuple[str, ...]]]
    """topic id -> (score, matched keywords)"""
    simhash: int = 0
    """Equal non-zero values put articles in one cluster (one story, several sources)."""


STORY = 0x1234_5678_9ABC_DEF1

DOCS = [
    Doc("cyber-gazette", "gazette",
        "Cyberattaque : l'agglomération du Grand Vallon paralysée par un rançongiciel",
        "Les services de l'agglomération fonctionnent en mode dégradé depuis lundi. Un rançongiciel a chiffré "
        "les serveurs de l'état civil et de l'urbanisme. Lire la suite",
        CYBER_TEXT, datetime(2026, 11, 24, 7, 30, tzinfo=UTC),
        {"cyber": (9, ("rançongiciel", "cyberattaque", "ANSSI"))}, STORY),
    Doc("cyber-courrier", "courrier",
        "Le Grand Vallon victime d'une cyberattaque d'ampleur",
        "Les serveurs de l'agglomération ont été chiffrés dans la nuit de dimanche à lundi.",
        CYBER_TEXT, datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        {"cyber": (7, ("cyberattaque",))}, STORY),
    Doc("cyber-acteurs", "acteurs",
        "Rançongiciel au Grand Vallon : les leçons d'une crise",
        "Cet article est réservé aux abonnés. Les collectivités face aux rançongiciels.",
        CYBER_TEXT, datetime(2026, 11, 25, 16, 0, tzinfo=UTC),
        {"cyber": (6, ("rançongiciel",))}, STORY),
    Doc("cnil-guide", "gazette",
        "La CNIL publie un guide de cybersécurité pour les petites communes",
        "Le guide détaille dix mesures simples : sauvegardes hors ligne, double authentification, mises à jour. "
        "Il s'adresse aux communes de moins de 3 500 habitants.",
        "", datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
        {"cyber": (5, ("cybersécurité",)), "donnees": (3, ("CNIL",))}),
    Doc("deliberations-open-data", "etalab",
        "Les collectivités publient leurs délibérations en open data",
        "",
        "Plus de 1 200 collectivités publient désormais leurs délibérations sur data.gouv.fr. "
        "Le schéma de données commun, élaboré avec l'association OpenDataFrance, facilite leur réutilisation. "
        "Des journalistes et des chercheurs exploitent déjà ces jeux de données. "
        "Une quatrième phrase ne doit pas figurer dans le résumé.",
        datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        {"donnees": (8, ("open data", "jeux de données"))}),
    Doc("appel-projets-sobriete", "banque",
        "Numérique responsable : 20 millions d'euros pour les communes rurales",
        LONG_LEAD, "", datetime(2026, 11, 27, 13, 0, tzinfo=UTC),
        {"sobriete": (7, ("numérique responsable", "empreinte environnementale"))}),
    Doc("piege", "courrier",
        "<script>alert('xss')</script>Budget\u202e numérique\r\nBcc: victime@example.org",
        "<img src=\"http://127.0.0.1:9/pixel.gif\" width=\"1\" height=\"1\"> Le budget numérique "
        "<a href=\"javascript:alert(1)\" onclick=\"alert(2)\">augmente</a> de 12 % cette année.",
        "", datetime(2026, 11, 28, 18, 0, tzinfo=UTC),
        {"sobriete": (2, ("budget numérique",))}),
    Doc("conseillers-numeriques", "gazette",
        "Conseillers numériques : la Creuse pérennise douze postes",
        "Le département prend le relais de l'État pour financer les conseillers numériques. "
        "Ils accompagnent chaque année plus de 4 000 habitants dans leurs démarches en ligne.",
        "", datetime(2026, 11, 29, 20, 0, tzinfo=UTC),  # Sunday 21:00 in Paris: still week 48
        {"inclusion": (6, ("conseillers numériques",))}),
    # the week before: for the week-on-week change
    Doc("cyber-w47", "gazette", "Une commune de l'Aude visée par une attaque par hameçonnage",
        "Des agents ont reçu de faux courriels du trésor public.", "",
        datetime(2026, 11, 18, 9, 0, tzinfo=UTC), {"cyber": (5, ("hameçonnage",))}),
    Doc("donnees-w47", "etalab", "Un nouveau catalogue de données pour les territoires",
        "Le catalogue recense les jeux de données utiles aux collectivités.", "",
        datetime(2026, 11, 19, 9, 0, tzinfo=UTC), {"donnees": (6, ("jeux de données",))}),
    Doc("donnees-w47b", "gazette", "Open data : les départements en retard",
        "Une étude pointe le retard des départements.", "",
        datetime(2026, 11, 20, 9, 0, tzinfo=UTC), {"donnees": (6, ("open data",))}),
    # the week after (Monday 30 November, 00:30 in Paris): not in week 48
    Doc("inclusion-w49", "gazette", "France services : 200 nouveaux espaces en 2027",
        "Le gouvernement annonce l'ouverture de 200 espaces France services.", "",
        datetime(2026, 11, 29, 23, 30, tzinfo=UTC), {"inclusion": (6, ("France services",))}),
]


def url_of(key: str, source: str) -> str:
    return f"{BASE}/{source}/{key}" if key != "piege" else "javascript:alert(document.cookie)"


def populate(store: Store, docs: list[Doc] | None = None, topics: list[tuple[str, str]] | None = None) -> dict[str, int]:
    """Store the sources, topics, articles and tags; returns article ids by key."""
    docs = DOCS if docs is None else docs
    store.sync_sources(SOURCES)
    ids: dict[str, int] = {}
    fetched = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    for doc in docs:
        url = url_of(doc.key, doc.source)
        article = Article(
            source_id=doc.source, url=url, canonical_url=url if url.startswith("http") else f"{BASE}/{doc.key}",
            title=doc.title, text=doc.text, text_source="feed", published_at=doc.published, fetched_at=fetched,
            guid=doc.key, summary=doc.summary, simhash=doc.simhash,
        )
        log = FetchLog(source_id=doc.source, url=url, started_at=fetched, duration_ms=5, status=200)
        result = store.save_source_batch(doc.source, [article], log, [])
        ids[doc.key] = (result.new_ids or result.updated_ids)[0]
    add_topics(store, topics or TOPICS)
    with store.transaction():
        for doc in docs:
            for topic_id, (score, keywords) in doc.topics.items():
                hits = [{"keyword": k, "field": "title", "text": k} for k in keywords]
                store.conn.execute(
                    "INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                    "VALUES (?, ?, ?, ?, 'test', ?)",
                    (ids[doc.key], topic_id, score, json.dumps(hits, ensure_ascii=False), iso(fetched)))
    return ids


def add_topics(store: Store, topics: list[tuple[str, str]]) -> None:
    with store.transaction():
        for position, (topic_id, label) in enumerate(topics):
            store.conn.execute(
                "INSERT OR REPLACE INTO topics (id, label, position, rule_hash, rule_json, active, updated_at) "
                "VALUES (?, ?, ?, 'test', '{}', 1, ?)", (topic_id, label, position, "2026-11-01T00:00:00Z"))


def add_members(store: Store) -> dict[str, object]:
    """Alice follows everything, Bruno cyber only, Chloé inclusion + data, Damien a topic without news."""
    out = {}
    out["alice"], _ = store.upsert_member("alice.martin@mairie-saint-vallier.fr", "Alice Martin",
                                          "Mairie de Saint-Vallier", None)
    out["bruno"], _ = store.upsert_member("bruno.leroy@grand-vallon.fr", "Bruno Leroy",
                                          "Agglomération du Grand Vallon", ["cyber"])
    out["chloe"], _ = store.upsert_member("chloe.nguyen@creuse.fr", "Chloé Nguyen", "Département de la Creuse",
                                          ["inclusion", "donnees"])
    out["damien"], _ = store.upsert_member("damien.petit@sivom-exemple.fr", "", "SIVOM", ["topic-sans-news"])
    return out
