"""Staff commands: `veille topics list|match|preview|suggest` and `veille retag`, on a real temporary archive."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.store import Store, utcnow

from .test_tag import add_articles

TOPICS = """\
topics:
  rip:
    label: Réseaux d'initiative publique
    keywords: [fibre optique, réseau d'initiative publique, RIP]
  cyber:
    label: Cybersécurité
    query: '(cyberattaque OR rançongiciel) NOT "jeu vidéo"'
"""


@pytest.fixture
def env(tmp_path: Path):
    """A topics file and an archive of invented articles from the last weeks."""
    topics = tmp_path / "topics.yaml"
    topics.write_text(TOPICS, encoding="utf-8")
    db = tmp_path / "veille.db"
    now = utcnow()
    with Store.open(db) as store:
        add_articles(store, [
            ("Fibre optique : le Cantal achève son réseau d'initiative publique", "", "Les prises raccordables.",
             now - timedelta(days=2)),
            ("Le très haut débit dans les zones rurales", "", "Le débit progresse.",
             now - timedelta(days=9)),
            ("Cyberattaque : la mairie de Lurcy paralysée", "Un rançongiciel.", "L'ANSSI accompagne la commune.",
             now - timedelta(days=3)),
            ("Un jeu vidéo sur les rançongiciels", "", "Pour les collégiens.", now - timedelta(days=4)),
            ("La fibre optique au cœur du village", "", "Les prises raccordables du RIP de deuxième génération.",
             now - timedelta(days=60)),
        ])
    return tmp_path


def run(env: Path, *args: str, input: str | None = None):
    runner = CliRunner()
    return runner.invoke(main, ["--db", str(env / "veille.db"), "--topics", str(env / "topics.yaml"),
                                "--config", str(env / "veille.yaml"), *args], input=input, catch_exceptions=False)


def test_retag_then_list_shows_counts_over_four_weeks(env):
    before = run(env, "topics", "list", "--json")
    assert before.exit_code == 0
    assert [t["status"] for t in json.loads(before.output)["topics"]] == ["new", "new"]
    result = run(env, "retag")
    assert result.exit_code == 0, result.output
    assert "rip" in result.output and "cyber" in result.output
    listed = json.loads(run(env, "topics", "list", "--json").output)["topics"]
    assert [(t["id"], t["articles_4_weeks"], t["status"]) for t in listed] == [("rip", 1, "ok"), ("cyber", 1, "ok")]
    assert listed[1]["rule"].startswith("query: (cyberattaque")
    plain = run(env, "topics", "list")
    assert plain.output.splitlines()[1].split("\t") == ["id", "label", "rule", "min score", "articles (4 weeks)",
                                                        "status"]
    assert "Réseaux d'initiative publique" in plain.output


def test_retag_only_touches_the_changed_topic(env):
    run(env, "retag")
    assert "every topic is up to date" in run(env, "retag").output
    (env / "topics.yaml").write_text(TOPICS.replace("RIP]", "RIP, très haut débit]"), encoding="utf-8")
    listed = json.loads(run(env, "topics", "list", "--json").output)["topics"]
    assert [t["status"] for t in listed] == ["to retag", "ok"]
    result = json.loads(run(env, "retag", "--json").output)
    assert [(t["topic_id"], t["gained"], t["lost"]) for t in result["topics"]] == [("rip", 1, 0)]
    forced = json.loads(run(env, "retag", "--topic", "cyber", "--json").output)
    assert [t["topic_id"] for t in forced["topics"]] == ["cyber"]


def test_match_json_has_exactly_the_documented_shape(env, tmp_path):
    body = tmp_path / "article.txt"
    body.write_text("Le département déploie la fibre optique. Les RIP avancent.", encoding="utf-8")
    result = run(env, "topics", "match", "--title", "Cyberattaque à la mairie", str(body), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == ["topics"]
    assert [(t["id"], t["score"]) for t in data["topics"]] == [("rip", 2), ("cyber", 3)]
    for topic in data["topics"]:
        assert list(topic) == ["id", "score", "hits"]
        for hit in topic["hits"]:
            assert list(hit) == ["keyword", "field", "text"]
    assert data["topics"][0]["hits"][1] == {"keyword": "RIP", "field": "body",
                                            "text": "… déploie la fibre optique. Les RIP avancent."}


def test_match_reads_stdin_and_explains_in_plain_text(env):
    result = run(env, "topics", "match", "-", input="Un rançongiciel a frappé la commune.")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "cyber (Cybersécurité): score 1",
        "  body    rançongiciel: Un **rançongiciel** a frappé la commune.",
    ]
    assert run(env, "topics", "match", "-", input="Rien à signaler.").output.strip() == "no topic"


def test_match_without_input_is_a_usage_error(env):
    result = run(env, "topics", "match")
    assert result.exit_code == 2
    assert "give a FILE" in result.output


def test_invalid_topics_file_exits_2_with_file_and_line(env):
    (env / "topics.yaml").write_text("topics:\n  rip:\n    label: RIP\n    keywords: [fibre]\n    min_scor: 2\n",
                                     encoding="utf-8")
    result = run(env, "topics", "match", "--title", "fibre")
    assert result.exit_code == 2
    assert f"{env / 'topics.yaml'}:5: [topics.rip.min_scor] unknown key" in result.output
    assert "did you mean 'min_score'?" in result.output


def test_preview_of_a_draft_shows_weeks_samples_gained_and_lost(env):
    run(env, "retag")
    result = run(env, "topics", "preview", "rip", "--rule", "{keywords: [très haut débit, RIP]}", "--weeks", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "rip (Réseaux d'initiative publique), draft rule, last 4 weeks: 1 articles (1 candidates checked)"
    assert lines[1] == "against the stored tags: +1 gained, -1 lost"
    assert sum(int(line.split()[1]) for line in lines if line.startswith("  20") and "-W" in line) == 1
    gained = lines[lines.index("gained:") + 1]
    assert gained.endswith("[3] Le **très haut débit** dans les zones rurales")
    lost = lines[lines.index("lost:") + 1]
    assert "Fibre optique : le Cantal" in lost
    data = json.loads(run(env, "topics", "preview", "rip", "--json").output)
    assert (data["total"], data["gained"], data["lost"], data["draft"]) == (2, 0, 0, False)
    assert data["samples"][0]["hits"][0]["hit"]["keyword"] == "fibre optique"


def test_preview_errors(env):
    run(env, "retag")
    unknown = run(env, "topics", "preview", "nope")
    assert unknown.exit_code == 2 and "unknown topic id" in unknown.output
    bad = run(env, "topics", "preview", "rip", "--rule", "{query: 'fibre OR'}")
    assert bad.exit_code == 2 and "character 7 of the query" in bad.output
    new = run(env, "topics", "preview", "velo", "--rule", "{keywords: [collégiens]}", "--json")
    assert json.loads(new.output)["gained"] == 1


def test_suggest_lists_words_of_the_topic_that_are_not_keywords(env):
    run(env, "retag")
    result = json.loads(run(env, "topics", "suggest", "rip", "--json").output)
    texts = [s["text"] for s in result["suggestions"]]
    assert "prises raccordables" in texts
    assert "fibre optique" not in texts and "optique" not in texts


def test_commands_reading_the_archive_need_it(env):
    (env / "veille.db").unlink()
    result = run(env, "topics", "preview", "rip")
    assert result.exit_code == 1 and "not found" in result.output
