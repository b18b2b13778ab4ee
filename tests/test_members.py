"""Members: stored in SQLite, managed with `veille members`, imported from the association's CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.errors import ConfigError
from veille.members import import_csv, normalise_email, parse_topics
from veille.store import Store

from .digestdata import TOPICS, add_topics

CSV = """email,name,organisation,topics
alice.martin@mairie-saint-vallier.fr,Alice Martin,Mairie de Saint-Vallier,
bruno.leroy@grand-vallon.fr,Bruno Leroy,Agglomération du Grand Vallon,cyber
pas-une-adresse,Claire Dubois,Commune de Tulle,cyber
chloe.nguyen@creuse.fr,"Nguyen, Chloé",Département de la Creuse,inclusion;donnees
damien.petit@sivom-exemple.fr,Damien Petit,SIVOM,cyber;blockchain
Bruno.Leroy@Grand-Vallon.fr,Bruno L.,Agglomération du Grand Vallon,donnees
"""


@pytest.fixture
def topics(store):
    add_topics(store, TOPICS)
    return store


@pytest.mark.parametrize("raw, expected", [
    ("  Alice.Martin@Mairie-Saint-Vallier.FR ", "alice.martin@mairie-saint-vallier.fr"),
    ("prenom.nom+veille@cc-pays-de-lunel.fr", "prenom.nom+veille@cc-pays-de-lunel.fr"),
])
def test_valid_emails_are_normalised(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "alice", "alice@", "@mairie.fr", "alice@mairie", "alice@@mairie.fr", "alice martin@mairie.fr",
    "alice@mairie.fr\r\nBcc: x@y.fr", "a..b@mairie.fr", "alice@-mairie.fr", "élodie@mairie.fr", "a@b.123",
])
def test_invalid_emails_are_refused(raw):
    with pytest.raises(ValueError):
        normalise_email(raw)


def test_topics_lists():
    assert parse_topics("cyber; donnees") == ("cyber", "donnees")
    assert parse_topics("") is None and parse_topics("all") is None and parse_topics(None) is None
    assert parse_topics(("cyber", "inclusion;cyber")) == ("cyber", "inclusion")


def test_members_are_stored_with_topics_token_and_times(store):
    member, outcome = store.upsert_member("alice.martin@mairie-saint-vallier.fr", "Alice Martin", "Mairie", ["donnees", "cyber"])
    assert outcome == "created"
    assert member.topics == ("cyber", "donnees") and member.active and len(member.unsubscribe_token) >= 32
    assert member.created_at is not None and member.updated_at is not None
    again, outcome = store.upsert_member("ALICE.MARTIN@mairie-saint-vallier.fr", "Alice Martin", "Mairie", ["cyber", "donnees"])
    assert outcome == "unchanged" and again.id == member.id
    everything = store.set_member_topics(member.email, None)
    assert everything.topics is None and everything.follows("n-importe-quoi")
    assert store.unsubscribe(member.unsubscribe_token).active is False
    _, outcome = store.upsert_member(member.email, "Alice M.", "Mairie", None)
    assert outcome == "updated" and store.get_member(member.email).active is False  # never resubscribed
    assert store.remove_member(member.email) and store.get_member(member.email) is None
    assert not store.remove_member(member.email)


def test_csv_import_reports_bad_lines_and_imports_the_rest(topics, tmp_path):
    path = tmp_path / "adherents.csv"
    path.write_text("\ufeff" + CSV, encoding="utf-8")  # Excel's BOM
    report = import_csv(topics, path)
    assert (report.created, report.updated, report.unchanged) == (3, 0, 0)
    problems = {(e.line, e.key) for e in report.errors}
    assert problems == {(4, "email"), (6, "topics"), (7, "email")}
    messages = " ".join(str(e) for e in report.errors)
    assert f"{path}:4:" in messages and "'pas-une-adresse'" in messages
    assert "'blockchain'" in messages and "known topics: cyber, donnees, inclusion, sobriete" in messages
    assert "already appears at line 3" in messages
    members = {m.email: m for m in topics.list_members()}
    assert set(members) == {"alice.martin@mairie-saint-vallier.fr", "bruno.leroy@grand-vallon.fr", "chloe.nguyen@creuse.fr"}
    assert members["alice.martin@mairie-saint-vallier.fr"].topics is None
    assert members["chloe.nguyen@creuse.fr"].name == "Nguyen, Chloé"
    assert members["chloe.nguyen@creuse.fr"].topics == ("donnees", "inclusion")


def test_csv_import_is_idempotent_and_updates(topics, tmp_path):
    path = tmp_path / "adherents.csv"
    path.write_text(CSV, encoding="utf-8")
    import_csv(topics, path)
    again = import_csv(topics, path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert len(topics.list_members()) == 3
    path.write_text(CSV.replace("Bruno Leroy,Agglomération du Grand Vallon,cyber",
                                "Bruno Leroy,Agglomération du Grand Vallon,cyber;sobriete"), encoding="utf-8")
    changed = import_csv(topics, path)
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 2)
    assert topics.get_member("bruno.leroy@grand-vallon.fr").topics == ("cyber", "sobriete")


@pytest.mark.parametrize("content, message", [
    ("email;name;organisation;topics\na@b.fr;A;B;\n", "separated by ';'"),
    ("courriel,nom\na@b.fr,A\n", "missing columns email, name, organisation, topics"),
    ("", "empty file"),
])
def test_csv_file_level_errors_name_the_file_and_line(topics, tmp_path, content, message):
    path = tmp_path / "adherents.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        import_csv(topics, path)
    assert info.value.line == 1 and str(info.value).startswith(str(path))


def test_csv_that_is_not_utf8_is_refused_with_a_hint(topics, tmp_path):
    path = tmp_path / "adherents.csv"
    path.write_bytes("email,name,organisation,topics\nh@a.fr,Hélène,Mairie,\n".encode("cp1252"))
    with pytest.raises(ConfigError, match="not valid UTF-8") as info:
        import_csv(topics, path)
    assert info.value.line == 2 and "CSV UTF-8" in info.value.hint


# -- the CLI ----------------------------------------------------------------------------------------


def _run(tmp_path: Path, *args: str):
    db = tmp_path / "veille.db"
    return CliRunner().invoke(main, ["--db", str(db), "--topics", str(tmp_path / "none.yaml"),
                                     "--config", str(tmp_path / "none.yaml"), *args], catch_exceptions=False)


def test_cli_members_lifecycle(tmp_path):
    with Store.open(tmp_path / "veille.db") as store:
        add_topics(store, TOPICS)
    result = _run(tmp_path, "members", "add", "Alice.Martin@Mairie-Saint-Vallier.fr", "--name", "Alice Martin",
                  "--organisation", "Mairie de Saint-Vallier", "--topics", "cyber;donnees")
    assert result.exit_code == 0, result.output
    assert "added alice.martin@mairie-saint-vallier.fr (cyber, donnees)" in result.output
    assert _run(tmp_path, "members", "add", "alice.martin@mairie-saint-vallier.fr").exit_code == 1
    bad = _run(tmp_path, "members", "add", "bruno@grand-vallon.fr", "--topics", "cybre")
    assert bad.exit_code == 2 and "unknown topic 'cybre'" in bad.output
    assert _run(tmp_path, "members", "add", "pas-une-adresse").exit_code == 2
    result = _run(tmp_path, "members", "set-topics", "alice.martin@mairie-saint-vallier.fr", "inclusion", "sobriete")
    assert result.exit_code == 0 and "inclusion, sobriete" in result.output
    listed = _run(tmp_path, "members", "list", "--json")
    record = json.loads(listed.output.splitlines()[0])
    assert record["email"] == "alice.martin@mairie-saint-vallier.fr" and record["topics"] == ["inclusion", "sobriete"]
    assert _run(tmp_path, "members", "set-topics", "alice.martin@mairie-saint-vallier.fr", "--all").exit_code == 0
    assert json.loads(_run(tmp_path, "members", "list", "--json").output)["topics"] == "all"
    assert _run(tmp_path, "members", "remove", "alice.martin@mairie-saint-vallier.fr").exit_code == 0
    assert _run(tmp_path, "members", "remove", "alice.martin@mairie-saint-vallier.fr").exit_code == 1
    assert _run(tmp_path, "members", "list", "--json").output == ""


def test_cli_members_import(tmp_path):
    with Store.open(tmp_path / "veille.db") as store:
        add_topics(store, TOPICS)
    path = tmp_path / "adherents.csv"
    path.write_text(CSV, encoding="utf-8")
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "veille.db"), "--topics", str(tmp_path / "none.yaml"),
                                       "members", "import", str(path)])
    assert result.exit_code == 0
    assert "3 created, 0 updated, 0 unchanged, 3 skipped" in result.stdout
    assert f"skipped {path}:4: [email]" in result.stderr
    again = _run(tmp_path, "members", "import", str(path), "--json")
    assert json.loads(again.stdout)["unchanged"] == 3
