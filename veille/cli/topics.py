"""Commands for staff who curate topics: `topics list|match|preview|suggest` and `retag`.

Every command reads topics.yaml (global `--topics`); those that look at the archive open it read-only,
except `retag`, which writes the new tags.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from . import App, main, pass_app
from .output import console, json_default, table


def _load(app: App):
    from ..tag import load_topics

    return load_topics(app.topics)


def _open_readonly(app: App):
    from ..errors import StoreError
    from ..store import Store

    if not app.db.exists():
        raise StoreError(f"database {app.db}: not found (run `veille fetch` first or pass --db)")
    return Store.open(app.db, readonly=True)


def _marked(text: str, start: int, end: int, rich: bool) -> str:
    """The hit text with its matched words emphasised: bold on a terminal, **like this** otherwise."""
    if end <= start:
        return _escape(text) if rich else text
    if rich:
        return f"{_escape(text[:start])}[bold yellow]{_escape(text[start:end])}[/]{_escape(text[end:])}"
    return f"{text[:start]}**{text[start:end]}**{text[end:]}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _is_tty() -> bool:
    return sys.stdout.isatty()


def _echo(line: str, rich: bool) -> None:
    if rich:
        console().print(line, soft_wrap=True)
    else:
        click.echo(line)


@main.group()
def topics() -> None:
    """Write and check the topics of topics.yaml (guide: docs/guide-thematiques.md)."""


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def topics_list(app: App, as_json: bool) -> None:
    """The topics in digest order, with their articles over the last 4 weeks.

    STATUS tells whether the archive follows the rule in topics.yaml: `to retag` means the file changed
    since the last `veille fetch` or `veille retag`.
    """
    from ..store import utcnow

    configured = _load(app)
    counts: dict[str, int] = {}
    states: dict[str, Any] = {}
    if app.db.exists():
        with _open_readonly(app) as store:
            counts = store.topic_recent_counts(utcnow() - timedelta(weeks=4))
            states = store.topic_states()
    records = []
    for topic in configured:
        state = states.get(topic.id)
        status = "new" if state is None or state.tagged_hash is None else (
            "ok" if state.tagged_hash == topic.rule_hash else "to retag")
        rule = f"query: {topic.query}" if topic.query else f"{len(topic.keywords)} keywords"
        shown = rule if as_json or len(rule) <= 60 else rule[:59] + "…"
        records.append({"id": topic.id, "label": topic.label, "rule": shown, "min_score": topic.min_score,
                        "articles_4_weeks": counts.get(topic.id, 0), "status": status})
    if as_json:
        click.echo(json.dumps({"topics": records}, ensure_ascii=False, indent=2))
        return
    table(["id", "label", "rule", "min score", "articles (4 weeks)", "status"],
          [[r["id"], r["label"], r["rule"], r["min_score"], r["articles_4_weeks"], r["status"]] for r in records],
          title=f"{len(records)} topics from {app.topics}")


@topics.command("match")
@click.argument("file", required=False, type=click.File("r", encoding="utf-8"))
@click.option("--title", default="", help="Title of the text.")
@click.option("--summary", default="", help="Summary (lead) of the text.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {\"topics\": [{id, score, hits}]}.")
@pass_app
def topics_match(app: App, file, title: str, summary: str, as_json: bool) -> None:
    """Which topics a text gets, with score and hits. FILE is the body text; `-` reads stdin.

    A hit in the title counts 3, in the summary 2, in the body 1, once per distinct keyword.
    """
    from ..tag import Tagger

    if file is None and not title and not summary:
        raise click.UsageError("give a FILE (or - for stdin), --title or --summary")
    body = file.read() if file is not None else ""
    tagger = Tagger(_load(app))
    results = tagger.match_marked(title, summary, body)
    if as_json:
        payload = {"topics": [{"id": m.topic_id, "score": m.score,
                               "hits": [{"keyword": h.keyword, "field": h.field, "text": h.text} for h in m.hits]}
                              for m, _ in results]}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    rich = _is_tty()
    labels = {t.id: t.label for t in tagger.topics}
    if not results:
        click.echo("no topic")
        return
    for m, marks in results:
        _echo(f"{m.topic_id} ({_escape(labels[m.topic_id]) if rich else labels[m.topic_id]}): score {m.score}", rich)
        for mark in marks:
            hit = mark.hit
            _echo(f"  {hit.field:<7} {_escape(hit.keyword) if rich else hit.keyword}: "
                  f"{_marked(hit.text, mark.start, mark.end, rich)}", rich)


def _draft(app: App, topic_id: str, rule: str | None, configured: list) -> tuple[Any, bool]:
    from ..config import Mapping, load_yaml, require_mapping
    from ..errors import ConfigError
    from ..tag import parse_topic

    current = next((t for t in configured if t.id == topic_id), None)
    if rule is None:
        if current is None:
            raise ConfigError(str(app.topics), None, topic_id, "unknown topic id",
                              "see `veille topics list`, or give a draft with --rule")
        return current, False
    source = "--rule"
    text = rule
    if "\n" not in rule and ":" not in rule and Path(rule).is_file():
        source, text = rule, Path(rule).read_text(encoding="utf-8")
    block = require_mapping(source, load_yaml(source, text), "--rule", 1)
    if "label" not in block:
        block = Mapping(block)
        block.line, block.key_lines = 1, {}
        block["label"] = current.label if current else topic_id
    return parse_topic(source, topic_id, block, 1), True


@topics.command("preview")
@click.argument("topic_id", metavar="ID")
@click.option("--rule", metavar="YAML", help="Draft rule to try instead of the current one, e.g. "
              "'{keywords: [fibre optique, THD], min_score: 2}' (or a file holding it).")
@click.option("--weeks", type=click.IntRange(1, 1000), default=12, show_default=True, help="Weeks of archive to scan.")
@click.option("--samples", type=click.IntRange(0, 200), default=10, show_default=True, help="Titles to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def topics_preview(app: App, topic_id: str, rule: str | None, weeks: int, samples: int, as_json: bool) -> None:
    """What a topic (or a draft rule) tags in the archive: articles per week, samples with the matched
    words emphasised, and the articles gained and lost against the current rule. Nothing is stored.
    """
    from ..tag import preview

    topic, is_draft = _draft(app, topic_id, rule, _load(app))
    with _open_readonly(app) as store:
        result = preview(store, topic, weeks=weeks, samples=samples, draft=is_draft)
    if as_json:
        click.echo(json.dumps(asdict(result), default=json_default, ensure_ascii=False, indent=2))
        return
    rich = _is_tty()
    kind = "draft rule" if is_draft else "current rule"
    _echo(f"{result.topic_id} ({_escape(result.label) if rich else result.label}), {kind}, "
          f"last {weeks} weeks: {result.total} articles ({result.candidates} candidates checked)", rich)
    _echo(f"against the stored tags: +{result.gained} gained, -{result.lost} lost", rich)
    peak = max((n for _, n in result.per_week), default=0) or 1
    click.echo("")
    click.echo("articles per week:")
    for week, n in result.per_week:
        click.echo(f"  {week}  {n:>5}  {'█' * round(20 * n / peak)}")
    for heading, items in (("samples", result.samples), ("gained", result.gained_samples),
                           ("lost", result.lost_samples)):
        if not items:
            continue
        click.echo("")
        click.echo(f"{heading}:")
        for sample in items:
            title_hit = next((h for h in sample.hits if h.hit.field == "title" and h.end > h.start), None)
            title = _marked(title_hit.hit.text, title_hit.start, title_hit.end, rich) if title_hit else (
                _escape(sample.title) if rich else sample.title)
            _echo(f"  {sample.published_at:%Y-%m-%d}  [{sample.score}] {title}", rich)
            other = next((h for h in sample.hits if h is not title_hit), None)
            if other is not None:
                keyword = f" ({_escape(other.hit.keyword) if rich else other.hit.keyword})" \
                    if other.end <= other.start else ""
                _echo(f"      {other.hit.field}{keyword}: {_marked(other.hit.text, other.start, other.end, rich)}", rich)
    click.echo("")
    click.echo(f"({result.seconds:.2f} s; to apply: edit {app.topics}, then `veille retag`)")


@topics.command("suggest")
@click.argument("topic_id", metavar="ID")
@click.option("--limit", type=click.IntRange(1, 500), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def topics_suggest(app: App, topic_id: str, limit: int, as_json: bool) -> None:
    """Words and phrases far more frequent in the topic's articles than in the rest of the archive,
    and not keywords yet: candidates for synonyms (check them with `topics preview --rule`).
    """
    from ..errors import ConfigError
    from ..tag import suggest

    topic = next((t for t in _load(app) if t.id == topic_id), None)
    if topic is None:
        raise ConfigError(str(app.topics), None, topic_id, "unknown topic id", "see `veille topics list`")
    with _open_readonly(app) as store:
        found = suggest(store, topic_id, limit=limit, topic=topic)
    if as_json:
        click.echo(json.dumps({"topic": topic_id, "suggestions": [asdict(s) for s in found]},
                              ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo(f"no suggestion for {topic_id}: it needs tagged articles (run `veille retag` first)")
        return
    table(["word or phrase", "topic articles", "other articles", "times more frequent"],
          [[s.text, s.in_topic, s.elsewhere, s.ratio] for s in found],
          title=f"suggestions for {topic_id} (sampled articles)")


@main.command()
@click.option("--topic", "topic_ids", multiple=True, metavar="ID",
              help="Re-tag this topic even if its rule did not change (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def retag(app: App, topic_ids: tuple[str, ...], as_json: bool) -> None:
    """Re-tag the archive for the topics whose rule changed in topics.yaml (or those given).

    Only the topics concerned are touched; the others keep their tags. Articles that were stored but
    never tagged are tagged too.
    """
    from .. import tag

    with app.watch() as watch:
        result = watch.retag(list(topic_ids) or None)
        pending = 0 if topic_ids else tag.tag_pending(watch.store, watch.tagger)
    if as_json:
        click.echo(json.dumps({"topics": [asdict(t) for t in result.topics], "untagged_articles_tagged": pending},
                              default=json_default, ensure_ascii=False, indent=2))
        return
    if not result.topics:
        click.echo("every topic is up to date" + (f"; {pending} untagged articles tagged" if pending else ""))
        return
    table(["topic", "candidates", "tagged", "gained", "lost", "seconds"],
          [[t.topic_id, t.candidates, t.tagged, t.gained, t.lost, f"{t.seconds:.2f}"] for t in result.topics],
          title=f"re-tagged {len(result.topics)} topics" + (f"; {pending} untagged articles tagged" if pending else ""))
