"""Small invented French articles and the feeds/pages that publish them, for pipeline tests."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import format_datetime
from datetime import datetime, timezone
from html import escape


@dataclass(frozen=True)
class Story:
    slug: str
    title: str
    lead: str
    paragraphs: tuple[str, ...]
    published: datetime
    author: str = "Rédaction"


STORIES = (
    Story(
        "fibre-creuse",
        "La Creuse achève son réseau d'initiative publique en fibre optique",
        "Le syndicat mixte DORSAL annonce le raccordement de la dernière commune creusoise au très haut débit.",
        (
            "Après huit ans de travaux, le réseau d'initiative publique porté par le syndicat mixte couvre désormais "
            "l'ensemble des communes du département. Plus de 62 000 prises sont raccordables à la fibre optique.",
            "Le président du syndicat salue « un chantier hors norme pour un territoire rural » et rappelle que "
            "l'État, la région et les intercommunalités ont financé ensemble les deux tiers de l'investissement.",
            "Les opérateurs commerciaux sont désormais présents sur le réseau, et les premières offres destinées aux "
            "entreprises des zones d'activité seront commercialisées au printemps. Les élus veulent maintenant "
            "accompagner les habitants les plus éloignés du numérique.",
        ),
        datetime(2026, 11, 17, 8, 30, tzinfo=timezone.utc),
        "Léa Martin",
    ),
    Story(
        "cyberattaque-mairie",
        "Une cyberattaque paralyse les services de la mairie de Saint-Amand",
        "Un rançongiciel a chiffré les serveurs de la commune dans la nuit de dimanche à lundi.",
        (
            "Les services de l'état civil, de l'urbanisme et de la cantine scolaire fonctionnent en mode dégradé "
            "depuis lundi matin. La commune a porté plainte et prévenu l'ANSSI ainsi que la CNIL.",
            "« Nous avions des sauvegardes, mais leur restauration prendra plusieurs jours », explique le directeur "
            "général des services. Les agents ressortent les registres papier pour accueillir les administrés.",
            "Le CERT-FR rappelle que les collectivités restent une cible privilégiée des groupes cybercriminels et "
            "recommande de tester régulièrement les plans de continuité d'activité.",
        ),
        datetime(2026, 11, 18, 14, 0, tzinfo=timezone.utc),
        "Paul Durand",
    ),
    Story(
        "open-data-grenoble",
        "Grenoble ouvre les données de ses transports en temps réel",
        "La métropole publie sous Licence Ouverte les horaires et positions des bus et tramways.",
        (
            "Les données ouvertes sont disponibles sur le portail de la métropole et sur data.gouv.fr. Elles "
            "alimentent déjà trois applications de mobilité développées par des entreprises locales.",
            "Le vice-président chargé du numérique y voit « un service public de la donnée » et promet d'ouvrir "
            "d'ici l'été les jeux de données sur la qualité de l'air et les consommations énergétiques.",
            "L'association OpenDataFrance accompagne la démarche et propose aux petites communes du territoire de "
            "mutualiser la publication de leurs données publiques.",
        ),
        datetime(2026, 11, 19, 9, 15, tzinfo=timezone.utc),
    ),
    Story(
        "inclusion-conseillers",
        "Les conseillers numériques prolongés jusqu'en 2028",
        "Le gouvernement annonce le financement de 1 500 postes de conseillers numériques France Services.",
        (
            "Les collectivités qui emploient un conseiller numérique recevront une aide forfaitaire de 17 500 euros "
            "par an. Le dispositif vise les publics éloignés du numérique, notamment les personnes âgées.",
            "Les associations d'élus saluent une bonne nouvelle pour l'inclusion numérique, mais regrettent un "
            "calendrier tardif qui a conduit certaines communes à ne pas renouveler les contrats.",
            "Une évaluation publiée en octobre montre que 80 % des usagers accompagnés se disent plus autonomes "
            "dans leurs démarches administratives en ligne.",
        ),
        datetime(2026, 11, 20, 7, 45, tzinfo=timezone.utc),
    ),
)

# The same agency dispatch as republished by a second title: new headline, a sentence added, a byline.
SYNDICATED = Story(
    "cyberattaque-saint-amand-afp",
    "Saint-Amand : la mairie victime d'un rançongiciel",
    "Un rançongiciel a chiffré les serveurs de la commune dans la nuit de dimanche à lundi.",
    (
        STORIES[1].paragraphs[0],
        STORIES[1].paragraphs[1],
        STORIES[1].paragraphs[2] + " La préfecture a proposé son appui technique.",
    ),
    STORIES[1].published,
    "avec AFP",
)


def page(story: Story, base: str, canonical: str | None = None, extra_head: str = "") -> str:
    """An article page as a French regional news site would serve it (menus, footer, related links)."""
    canonical = canonical or f"{base}/articles/{story.slug}"
    body = "\n".join(f"<p>{escape(p)}</p>" for p in story.paragraphs)
    return f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8">
<title>{escape(story.title)} | Territoires Hebdo</title>
<link rel="canonical" href="{escape(canonical)}">
<meta name="author" content="{escape(story.author)}">
<meta property="article:published_time" content="{story.published.isoformat()}">
<meta name="description" content="{escape(story.lead)}">{extra_head}
</head><body>
<header><nav><a href="/">Accueil</a> <a href="/rubriques/numerique">Numérique</a> <a href="/abonnement">S'abonner</a></nav></header>
<main><article>
<h1>{escape(story.title)}</h1>
<p class="byline">Par {escape(story.author)}, publié le {story.published:%d/%m/%Y}</p>
<p class="lead"><strong>{escape(story.lead)}</strong></p>
{body}
</article>
<aside><h2>À lire aussi</h2><ul><li><a href="/articles/autre">Les budgets locaux en 2027</a></li></ul></aside>
</main>
<footer><p>© Territoires Hebdo — Mentions légales — Politique de confidentialité</p></footer>
</body></html>"""


def rss(items: list[tuple[Story, str]], title: str = "Territoires Hebdo", encoding: str = "utf-8") -> bytes:
    """RSS 2.0 with the stories' leads as descriptions; `items` pairs a story with its link."""
    entries = "\n".join(
        f"""<item><title>{escape(s.title)}</title><link>{escape(link)}</link>
<guid isPermaLink="false">{escape(s.slug)}</guid><pubDate>{format_datetime(s.published)}</pubDate>
<dc:creator>{escape(s.author)}</dc:creator><description>{escape(s.lead)}</description></item>"""
        for s, link in items
    )
    xml = f"""<?xml version="1.0" encoding="{encoding}"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
<title>{escape(title)}</title><link>http://127.0.0.1/</link><description>Actualité des territoires</description>
<language>fr</language>
{entries}
</channel></rss>"""
    return xml.encode(encoding, errors="xmlcharrefreplace")


def atom(items: list[tuple[Story, str]], title: str = "Territoires Atom") -> bytes:
    entries = "\n".join(
        f"""<entry><title>{escape(s.title)}</title><link href="{escape(link)}"/><id>urn:x:{escape(s.slug)}</id>
<updated>{s.published.isoformat()}</updated><author><name>{escape(s.author)}</name></author>
<summary>{escape(s.lead)}</summary></entry>"""
        for s, link in items
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>{escape(title)}</title><id>urn:x:feed</id>
<updated>2026-11-20T08:00:00Z</updated>
{entries}
</feed>""".encode()
