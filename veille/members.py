"""Members: address validation, topic lists, and the CSV import staff use to load the association's list.

CSV: UTF-8 (a BOM from Excel is fine), header `email,name,organisation,topics`, topics as ids separated
by `;` (empty: all topics). Importing is idempotent (members are matched by email, case-insensitively):
a re-import updates, never duplicates, and never re-activates someone who unsubscribed. Bad lines are
reported with their line number and skipped; the rest is imported.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .config import read_text_file
from .errors import ConfigError

if TYPE_CHECKING:
    from .store import Store

CSV_COLUMNS = ("email", "name", "organisation", "topics")
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def normalise_email(value: str) -> str:
    """The address, lower-cased; ValueError saying what is wrong otherwise.

    Lower-cased whole: mailbox names are case-insensitive in practice, and one spelling per member
    keeps lists and outbox file names stable. ASCII only (no SMTPUTF8): an internationalised domain
    must be given in its punycode form.
    """
    email = (value or "").strip()
    if not email:
        raise ValueError("empty email address")
    if any(c.isspace() for c in email) or any(ord(c) < 32 for c in email):
        raise ValueError(f"{email!r} is not an email address (it contains spaces or line breaks)")
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{email!r} is not an email address (expected name@domain.fr)")
    if not email.isascii():
        raise ValueError(f"{email!r}: only ASCII addresses are supported (write the domain in punycode)")
    labels = domain.rstrip(".").split(".")
    if not _LOCAL.match(local) or len(local) > 64 or len(email) > 254:
        raise ValueError(f"{email!r} is not an email address (invalid part before @)")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{email!r} is not an email address (invalid domain {domain!r})")
    return f"{local}@{domain.rstrip('.')}".lower()


def parse_topics(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """`cyber;data` or a list of ids -> ids; empty, None or `all` -> None (every topic)."""
    if value is None:
        return None
    parts = re.split(r"[;,\s]+", value) if isinstance(value, str) else [p for v in value for p in re.split(r"[;,\s]+", v)]
    ids = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not ids or ids == ("all",):
        return None
    return ids


def known_topics(store: "Store") -> set[str]:
    return {row["id"] for row in store.digest_topics()}


def check_topics(topics: tuple[str, ...] | None, known: set[str]) -> None:
    """ValueError naming the unknown ids (and the known ones, to help the typo)."""
    if topics is None:
        return
    unknown = [t for t in topics if t not in known]
    if unknown:
        hint = f"known topics: {', '.join(sorted(known))}" if known else \
            "no topic is known yet: run `veille fetch` (or `veille run`) once so topics.yaml is loaded"
        raise ValueError(f"unknown topic{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} ({hint})")


@dataclass(frozen=True)
class ImportReport:
    created: int
    updated: int
    unchanged: int
    errors: tuple[ConfigError, ...]
    """One per skipped line, with its line number."""

    def to_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "errors": [{"line": e.line, "field": e.key, "message": e.message} for e in self.errors]}


def import_csv(store: "Store", path: str | Path, text: str | None = None,
               known: set[str] | None = None) -> ImportReport:
    """Import members from a CSV file; file-level problems raise `ConfigError`, line-level ones are reported.

    `known` topic ids default to the topics table.
    """
    spath = str(path)
    if text is None:
        text = read_text_file(path, "save the file as 'CSV UTF-8' (in Excel: Save as > CSV UTF-8)")
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(spath, 1, None, "empty file", f"the first line must be: {','.join(CSV_COLUMNS)}") from None
    header = [h.strip().lower() for h in header]
    if len(header) == 1 and ";" in header[0]:
        raise ConfigError(spath, 1, None, "columns are separated by ';'",
                          "separate columns with ',' (topics inside a column are separated by ';')")
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ConfigError(spath, 1, None, f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                          f"the first line must be: {','.join(CSV_COLUMNS)}")
    col = {name: header.index(name) for name in CSV_COLUMNS}
    known = known_topics(store) if known is None else known
    errors: list[ConfigError] = []
    seen: dict[str, int] = {}
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            errors.append(ConfigError(spath, reader.line_num, None, f"unreadable line: {e}"))
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        row = row + [""] * (len(header) - len(row))
        try:
            email = normalise_email(row[col["email"]])
        except ValueError as e:
            errors.append(ConfigError(spath, line, "email", str(e)))
            continue
        if email.lower() in seen:
            errors.append(ConfigError(spath, line, "email", f"{email} already appears at line {seen[email.lower()]}",
                                      "keep one line per member"))
            continue
        seen[email.lower()] = line
        topics = parse_topics(row[col["topics"]])
        try:
            check_topics(topics, known)
        except ValueError as e:
            errors.append(ConfigError(spath, line, "topics", str(e)))
            continue
        _, outcome = store.upsert_member(email, row[col["name"]].strip(), row[col["organisation"]].strip(), topics)
        counts[outcome] += 1
    return ImportReport(errors=tuple(errors), **counts)
