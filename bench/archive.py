"""Benchmark of the analysts' archive: search, weekly counts per topic, CSV export.

One command: `.venv/bin/python bench/archive.py [--articles N]`. It generates a synthetic archive of N
articles (default 100,000) spread over two years, with French press vocabulary about local authorities
and their digital transition, tags them by direct inserts into article_topics, caches the database in a
temp dir (keyed by N and the schema), then times the library calls analysts use and prints a
table with the targets of the issue beside the measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from veille import dedupe  # noqa: E402
from veille.digest import iso_week  # noqa: E402
from veille.store import PAGE_SIZE, Store, iso  # noqa: E402
from veille.store.schema import MIGRATIONS  # noqa: E402

END = datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc)
DAYS = 730

SOURCES = [
    ("gazette-communes", "La Gazette des communes"), ("acteurs-publics", "Acteurs publics"),
    ("maire-info", "Maire info"), ("localtis", "Localtis"), ("courrier-maires", "Le Courrier des maires"),
    ("ouest-france", "Ouest-France"), ("telegramme", "Le Télégramme"), ("sud-ouest", "Sud Ouest"),
    ("voix-du-nord", "La Voix du Nord"), ("dna", "Dernières Nouvelles d'Alsace"), ("le-progres", "Le Progrès"),
    ("la-depeche", "La Dépêche du Midi"), ("midi-libre", "Midi Libre"), ("nice-matin", "Nice-Matin"),
    ("est-republicain", "L'Est républicain"), ("paris-normandie", "Paris-Normandie"),
    ("la-montagne", "La Montagne"), ("republicain-lorrain", "Le Républicain lorrain"),
    ("banque-territoires", "Banque des Territoires"), ("anct", "Agence nationale de la cohésion des territoires"),
    ("cnil", "CNIL"), ("cybermalveillance", "Cybermalveillance.gouv.fr"), ("numerique-gouv", "numerique.gouv.fr"),
    ("zdnet-fr", "ZDNet France"), ("next", "Next"), ("usine-digitale", "L'Usine digitale"),
    ("lemonde-pixels", "Le Monde Pixels"), ("echos-territoires", "Les Echos Territoires"),
    ("moniteur", "Le Moniteur"), ("weka", "Weka"), ("achatpublic", "Achatpublic info"),
    ("decision-atelier", "Décision Atelier"), ("declic", "Déclic"), ("villes-internet", "Villes Internet"),
    ("avicca", "Avicca"), ("adullact", "Adullact"), ("opendata-france", "OpenDataFrance"),
    ("hospimedia", "Hospimedia"), ("cafe-pedagogique", "Le Café pédagogique"), ("ville-rail", "Ville, Rail & Transports"),
]

TOPICS = {
    "smart-city": ("Smart city et territoire intelligent",
                   ["smart city", "ville intelligente", "territoire intelligent", "capteurs connectés",
                    "hyperviseur urbain", "éclairage public intelligent", "jumeau numérique"]),
    "inclusion-numerique": ("Inclusion numérique",
                            ["inclusion numérique", "conseillers numériques", "fracture numérique",
                             "médiation numérique", "illectronisme", "France services", "Pass numérique"]),
    "cybersecurite": ("Cybersécurité",
                      ["cybersécurité", "cyberattaque", "rançongiciel", "ransomware", "ANSSI",
                       "fuite de données", "hameçonnage"]),
    "rip-thd": ("Réseaux d'initiative publique et très haut débit",
                ["fibre optique", "très haut débit", "réseau d'initiative publique", "raccordement",
                 "zones blanches", "New Deal mobile", "déploiement de la fibre"]),
    "open-data": ("Open data",
                  ["open data", "données publiques", "ouverture des données", "data.gouv.fr",
                   "portail open data", "jeux de données", "licence ouverte"]),
    "dematerialisation": ("Dématérialisation",
                          ["dématérialisation", "démarches en ligne", "guichet numérique", "signature électronique",
                           "parapheur électronique", "actes dématérialisés", "saisine par voie électronique"]),
    "mutualisation": ("Mutualisation",
                      ["mutualisation", "syndicat mixte", "services communs", "groupement de commandes",
                       "intercommunalité", "opérateur public de services numériques", "plateforme mutualisée"]),
    "logiciels-libres": ("Logiciels libres",
                         ["logiciel libre", "logiciels libres", "open source", "code source", "Adullact",
                          "communs numériques", "socle interministériel"]),
    "rgpd": ("Données personnelles et RGPD",
             ["RGPD", "données personnelles", "délégué à la protection des données", "CNIL",
              "registre des traitements", "consentement", "vidéoprotection"]),
    "ia": ("Intelligence artificielle",
           ["intelligence artificielle", "IA générative", "algorithme", "agent conversationnel",
            "apprentissage automatique", "Albert", "modèle de langage"]),
    "sante": ("Santé", ["télémédecine", "centre de santé", "désert médical", "hôpital", "maison de santé",
                        "dossier médical partagé", "médecins généralistes"]),
    "education": ("Éducation", ["espace numérique de travail", "collège", "école numérique", "lycée",
                                "tablettes", "équipement des écoles", "enseignants"]),
    "mobilites": ("Mobilités", ["mobilité", "transport à la demande", "covoiturage", "vélo en libre-service",
                                "billettique", "autorité organisatrice des mobilités", "MaaS"]),
    "transition-ecologique": ("Transition écologique",
                              ["transition écologique", "sobriété numérique", "sobriété énergétique",
                               "rénovation énergétique", "plan climat", "biodiversité", "empreinte carbone"]),
    "finances-locales": ("Finances locales", ["budget primitif", "dotation globale de fonctionnement",
                                             "fiscalité locale", "loi de finances", "investissement",
                                             "épargne brute", "endettement"]),
    "rh-formation": ("Ressources humaines et formation des élus",
                     ["formation des élus", "agents territoriaux", "CNFPT", "recrutement", "télétravail",
                      "compétences numériques", "fonction publique territoriale"]),
    "commande-publique": ("Commande publique",
                          ["commande publique", "marché public", "appel d'offres", "UGAP", "acheteurs publics",
                           "cahier des charges", "profil d'acheteur"]),
    "cloud": ("Cloud et hébergement souverain",
              ["cloud souverain", "SecNumCloud", "hébergement des données", "centre de données",
               "datacenter", "informatique en nuage", "hébergeur"]),
    "ruralite": ("Territoires ruraux", ["territoires ruraux", "petites villes de demain", "communes rurales",
                                       "revitalisation", "Action cœur de ville", "bourgs-centres", "ruralité"]),
    "e-administration": ("Relation usagers et e-administration",
                         ["relation usagers", "gestion de la relation citoyen", "portail citoyen",
                          "application mobile", "services en ligne", "FranceConnect", "accessibilité numérique"]),
}

PLACES = [
    "Rennes", "Nantes", "Lyon", "Brest", "Angers", "Metz", "Nancy", "Dijon", "Poitiers", "Limoges", "Pau", "Niort",
    "Vannes", "Quimper", "Lorient", "Laval", "Le Mans", "Tours", "Orléans", "Besançon", "Grenoble", "Annecy",
    "Chambéry", "Valence", "Nîmes", "Montpellier", "Toulouse", "Bordeaux", "Lille", "Amiens", "Rouen", "Caen",
    "Saint-Brieuc", "Périgueux", "Aurillac", "Mende", "Gap", "Digne-les-Bains", "Cahors", "Auch",
    "la métropole de Lyon", "le département du Finistère", "la région Bretagne", "le département de la Gironde",
    "la communauté de communes du Val d'Ille", "l'agglomération du Grand Annecy", "la région Occitanie",
    "le département des Landes", "la communauté urbaine de Dunkerque", "l'Eurométropole de Strasbourg",
]
ACTORS = ["le maire", "la présidente de l'intercommunalité", "le vice-président chargé du numérique",
          "la directrice générale des services", "le DSI de la collectivité", "l'adjointe au numérique",
          "le préfet", "les élus communautaires", "le conseil départemental", "les agents"]
VERBS = ["lance", "déploie", "présente", "généralise", "expérimente", "renforce", "annonce", "finance",
         "mutualise", "évalue", "accélère", "prépare"]
TITLE_TEMPLATES = [
    "{place} {verb} un projet de {kw}", "{Kw} : {place} passe à la vitesse supérieure",
    "À {place}, la {kw2} au cœur du mandat", "{Kw} et {kw2} : le pari de {place}",
    "Comment {place} mise sur {kw}", "{Kw} : ce que prévoit {place} pour 2027",
    "{place} : un bilan contrasté pour {kw}", "Les collectivités face à {kw}",
]
FILLER = [
    "Le projet a été présenté lors du dernier conseil municipal.",
    "Les élus souhaitent associer les habitants dès la phase de conception.",
    "Le budget consacré à cette opération s'élève à plusieurs centaines de milliers d'euros.",
    "La collectivité s'appuie sur un prestataire retenu à l'issue d'une consultation.",
    "Un premier bilan sera dressé à la fin de l'année prochaine.",
    "Plusieurs communes voisines observent l'expérimentation avec intérêt.",
    "Les agents ont suivi une formation de deux jours avant le lancement.",
    "L'opposition dénonce un calendrier trop serré et un manque de concertation.",
    "La démarche s'inscrit dans le schéma directeur adopté l'an dernier.",
    "Les associations locales ont été consultées à plusieurs reprises.",
    "La préfecture accompagne le projet dans le cadre du plan de relance.",
    "Les résultats devraient être publiés sur le site internet de la ville.",
    "Selon les services, le dispositif a déjà touché plus de deux mille usagers.",
    "Le conseil communautaire a voté la délibération à l'unanimité.",
]


def _article(rnd: random.Random, i: int, topic_ids: list[str], weights: list[float]) -> tuple:
    chosen = list(dict.fromkeys(rnd.choices(topic_ids, weights, k=rnd.choice((1, 1, 2, 2, 3)))))
    kws = [kw for t in chosen for kw in TOPICS[t][1]]
    kw, kw2 = rnd.choice(kws), rnd.choice(kws)
    place = rnd.choice(PLACES)
    title = rnd.choice(TITLE_TEMPLATES).format(place=place, verb=rnd.choice(VERBS), kw=kw, kw2=kw2,
                                               Kw=kw[:1].upper() + kw[1:])
    title = title[:1].upper() + title[1:]
    summary = (f"{place[:1].upper() + place[1:]} {rnd.choice(VERBS)} un dispositif consacré à {rnd.choice(kws)}. "
               f"{rnd.choice(ACTORS).capitalize()} détaille les objectifs.")
    sentences = []
    for _ in range(rnd.randint(8, 18)):
        if rnd.random() < 0.45:
            sentences.append(f"{rnd.choice(ACTORS).capitalize()} {rnd.choice(VERBS)} {rnd.choice(kws)} "
                             f"avec {rnd.choice(PLACES)} et {rnd.choice(kws)}.")
        else:
            sentences.append(rnd.choice(FILLER))
    text = " ".join(sentences)
    return chosen, title, summary, text, kws


def generate(path: Path, n: int, seed: int = 7) -> None:
    """Write a synthetic archive of `n` articles at `path` (migrated schema, FTS filled by its triggers)."""
    rnd = random.Random(seed)
    store = Store.open(path)
    now = iso(END)
    topic_ids = list(TOPICS)
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO sources (id, name, type, url, current_url, created_at, updated_at, last_ok_at) "
            "VALUES (?, ?, 'feed', ?, ?, ?, ?, ?)",
            [(sid, name, f"https://{sid}.example.fr/rss", f"https://{sid}.example.fr/rss", now, now, now)
             for sid, name in SOURCES])
        conn.executemany(
            "INSERT INTO topics (id, label, position, rule_hash, rule_json, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(tid, label, pos, f"h{pos}", json.dumps({"keywords": kws}, ensure_ascii=False), now)
             for pos, (tid, (label, kws)) in enumerate(TOPICS.items())])
    batch: list[tuple] = []
    tags: list[tuple] = []
    cluster = 0
    for i in range(n):
        # topics grow or shrink over the two years, so trends have a shape
        progress = i / max(n - 1, 1)
        weights = [1.0 + (progress * 3 if t in ("ia", "cybersecurite") else 0)
                   + (1 - progress if t == "rip-thd" else 0) for t in topic_ids]
        chosen, title, summary, text, kws = _article(rnd, i, topic_ids, weights)
        published = END - timedelta(seconds=int((1 - progress) * DAYS * 86400) + rnd.randint(0, 3600))
        sid = rnd.choice(SOURCES)[0]
        if i == 0 or rnd.random() > 0.1:
            cluster += 1
        url = f"https://{sid}.example.fr/articles/{i}"
        batch.append((i + 1, sid, f"g{i}", url, url, title, summary, text, iso(published), iso(published),
                      iso(published), cluster, dedupe.simhash(text) if i % 50 == 0 else 0))
        for t in chosen:
            hits = [{"keyword": k, "field": "body", "text": k} for k in TOPICS[t][1][:2]]
            tags.append((i + 1, t, rnd.randint(1, 9), json.dumps(hits, ensure_ascii=False), f"h{topic_ids.index(t)}",
                         iso(published)))
        if len(batch) >= 2000 or i == n - 1:
            with store.transaction() as conn:
                conn.executemany("INSERT OR IGNORE INTO clusters (id, created_at) VALUES (?, ?)",
                                 [(row[11], row[8]) for row in batch])
                conn.executemany(
                    "INSERT INTO articles (id, source_id, guid, url, canonical_url, title, summary, text, "
                    "text_source, published_at, fetched_at, updated_at, cluster_id, simhash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'page', ?, ?, ?, ?, ?)", batch)
                conn.executemany(
                    "INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", tags)
            batch.clear()
            tags.clear()
    store.execute("ANALYZE")
    store.close()


def archive_path(n: int) -> Path:
    folder = Path(tempfile.gettempdir()) / "veille-bench-archive"
    folder.mkdir(exist_ok=True)
    schema = hashlib.sha256("".join(sql for _n, _name, sql in MIGRATIONS).encode()).hexdigest()[:10]
    path = folder / f"archive-{n}-{schema}-p{PAGE_SIZE}.db"
    if not path.exists():
        partial = path.with_suffix(".partial")
        for leftover in folder.glob(partial.name + "*"):
            leftover.unlink()
        print(f"generating {n:,} articles in {path} (cached for next runs)...", file=sys.stderr)
        started = time.perf_counter()
        generate(partial, n)
        for suffix in ("-wal", "-shm"):
            Path(str(partial) + suffix).unlink(missing_ok=True)
        partial.rename(path)
        print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


TYPICAL = [
    ("2 terms", "fibre optique", {}),
    ("2 terms", "conseillers numériques", {}),
    ("3 terms", "collectivité cyberattaque hôpital", {}),
    ("3 terms", "budget primitif commune", {}),
    ("phrase", '"données publiques"', {}),
    ("phrase", '"transport à la demande"', {}),
    ("--topic", "conseillers numériques", {"topics": ["inclusion-numerique"]}),
    ("--source", "budget", {"sources": ["localtis"]}),
    ("--since", "intelligence artificielle", {"since": "2026-06-01"}),
]
"""The issue's "typical queries (2-3 terms, a phrase, a filter)": the p95 target applies to these."""

OTHER = [
    ("OR + NOT", "(rançongiciel OR ransomware) NOT ANSSI", {}),
    ("prefix", "numéri* inclusion", {}),
    ("title:", "title:smart city", {}),
    ("NEAR", "mutualisation NEAR/5 syndicat", {}),
    ("1 common word", "budget", {}),
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000, help="archive size (default 100,000)")
    parser.add_argument("--repeat", type=int, default=20, help="runs of each search query")
    args = parser.parse_args()

    from veille import search as archive

    path = archive_path(args.articles)
    store = Store.open(path, readonly=True)
    rows: list[tuple[str, str, str, str]] = []

    def measure(queries: list) -> tuple[list[float], list[float]]:
        """Wall-clock and CPU seconds of every run (CPU time shows the cost when the machine is shared)."""
        walls: list[float] = []
        cpus: list[float] = []
        for label, text, filters in queries:
            runs = []
            for _ in range(args.repeat):
                started, cpu = time.perf_counter(), time.process_time()
                result = archive.search(store, text, limit=20, **filters)
                runs.append(time.perf_counter() - started)
                cpus.append(time.process_time() - cpu)
            walls.extend(runs)
            rows.append((f"  search {label}: {text} ({result.total:,} matches)",
                         f"{statistics.median(runs) * 1000:.1f} ms", "", "p50"))
        return walls, cpus

    archive.search(store, "échauffement")  # imports and caches, not what an analyst waits for twice
    typical, typical_cpu = measure(TYPICAL)
    p95 = _percentile(typical, 0.95) * 1000
    rows.append(("search p50, typical queries", f"{_percentile(typical, 0.5) * 1000:.1f} ms", "", ""))
    rows.append(("search p95, typical queries", f"{p95:.1f} ms", "<= 30 ms", "pass" if p95 <= 30 else "FAIL"))
    rows.append(("search p95, typical queries, CPU time", f"{_percentile(typical_cpu, 0.95) * 1000:.1f} ms", "",
                 "info"))
    other, other_cpu = measure(OTHER)
    rows.append(("search p95, other queries (no target)", f"{_percentile(other, 0.95) * 1000:.1f} ms", "", ""))
    rows.append(("search p95, other queries, CPU time", f"{_percentile(other_cpu, 0.95) * 1000:.1f} ms", "", "info"))

    runs = []
    for _ in range(10):
        started = time.perf_counter()
        counts = archive.weekly_counts(store, weeks=105, end_week=iso_week(END))
        runs.append(time.perf_counter() - started)
    weekly = statistics.median(runs) * 1000
    rows.append((f"weekly counts per topic, 2 years ({len(counts.weeks)} weeks x {len(counts.series)} topics)",
                 f"{weekly:.1f} ms", "<= 100 ms", "pass" if weekly <= 100 else "FAIL"))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export.csv"
        started, cpu = time.perf_counter(), time.process_time()
        written = archive.export(store, out, fmt="csv")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        size = out.stat().st_size / 1e6
    rows.append((f"export {written:,} rows to CSV ({size:.0f} MB)", f"{elapsed:.2f} s",
                 "<= 5 s", "pass" if elapsed <= 5 else "FAIL"))
    rows.append(("export to CSV, CPU time", f"{cpu:.2f} s", "", "info"))
    store.close()

    width = max(len(r[0]) for r in rows)
    print(f"\nArchive benchmark: {args.articles:,} articles over 2 years ({path})")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"search: median of {args.repeat} runs per query, limit 20, snippets included\n")
    print(f"{'measure'.ljust(width)}  {'result':>10}  {'target':>10}  status")
    for name, value, target, status in rows:
        print(f"{name.ljust(width)}  {value:>10}  {target:>10}  {status}")
    return 1 if any(r[3] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
