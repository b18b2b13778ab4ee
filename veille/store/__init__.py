"""Storage stage: the one place that speaks SQL. Everything else calls `Store` methods.

The store is split by domain (ingestion here and in `articles.py`, `topics.py`, `members.py`,
`archive.py`), combined into one `Store` class. Every statement is parameterised.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Iterator


from ..errors import StoreError
from .articles import ArticlesMixin
from .archive import ArchiveMixin
from .digests import DigestsMixin
from .members import MembersMixin
from .ops import OpsMixin
from .schema import MIGRATIONS
from .topics import TopicsMixin

__all__ = ["Store", "utcnow", "iso", "parse_iso", "paris_week"]

PAGE_SIZE = 16384
"""Bytes per page of a new archive (SQLite fixes it when the file is created; existing archives keep
theirs). An article row is 2-3 KB with its text: 4 KB pages held one, half empty, and a cold pass wrote
every page twice (WAL, then checkpoint). 16 KB pages and the writer's larger cache cut
a cold pass's storing by a tenth (its writer thread: 3.3 -> 3.0 CPU s on bench/ingest.py's corpus)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    """The archive's time format: UTC, second precision, `Z` suffix."""
    if moment is None:
        return None
    return _naive_utc(moment).isoformat() + "Z"  # 4x cheaper than strftime


def _naive_utc(moment: datetime) -> datetime:
    """The stored precision of an aware datetime: UTC, whole seconds, no tzinfo."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not stored: give a timezone")
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.replace(microsecond=0, tzinfo=None)


def paris_week(moment: datetime) -> str:
    """`article_weeks.week` worked out in Python: the ISO week in Europe/Paris under the EU summer-time
    rule the view applies (last Sunday of March to last Sunday of October, 01:00 UTC), at the second
    precision stored, so `articles.week` written with an article always equals the view's."""
    return iso_and_week(moment)[1]


def iso_and_week(moment: datetime) -> tuple[str, str]:
    """`(iso(moment), paris_week(moment))` with one conversion: the writer needs both for every new article."""
    utc = _naive_utc(moment)
    summer = _last_sunday_1am(utc.year, 3) <= utc < _last_sunday_1am(utc.year, 10)
    year, week, _ = (utc + timedelta(hours=2 if summer else 1)).isocalendar()
    return utc.isoformat() + "Z", f"{year}-W{week:02d}"


@cache
def _last_sunday_1am(year: int, month: int) -> datetime:
    last = datetime(year, month, 31, 1)
    return last - timedelta(days=(last.weekday() + 1) % 7)


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Store(ArticlesMixin, TopicsMixin, MembersMixin, DigestsMixin, ArchiveMixin, OpsMixin):
    """The SQLite archive. Open with `Store.open(path)`; `readonly=True` for analysts' commands."""

    def __init__(self, conn: sqlite3.Connection, path: str, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()

    @property
    def db(self):
        """A sqlite-utils `Database` on the same connection, for scripts and notebooks
        (`store.db["articles"].rows_where(...)`); veille's own code goes through the methods below."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False, migrate: bool = True) -> "Store":
        path = str(path)
        try:
            if readonly:
                if not Path(path).exists():
                    raise StoreError(f"database {path}: not found (run `veille fetch` first or pass --db)")
                conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True,
                                       check_same_thread=False, timeout=30)
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                conn.execute(f"PRAGMA page_size = {int(PAGE_SIZE)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"database {path}: cannot open it: {e}") from e
        store = cls(conn, path, readonly)
        if readonly:
            store._check_version()
        elif migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _check_version(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database {self.path}: schema version {version} is newer than this veille "
                f"({len(MIGRATIONS)}); upgrade veille"
            )
        if version < len(MIGRATIONS) and self.readonly:
            raise StoreError(f"database {self.path}: schema version {version} is old; run `veille fetch` "
                             "or any writing command once to migrate it")

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; returns the numbers applied."""
        self._check_version()
        applied = []
        for number, _name, sql in MIGRATIONS:
            if number <= self.schema_version:
                continue
            try:
                with self.transaction():
                    for statement in _split_sql(sql):
                        self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {int(number)}")
            except sqlite3.DatabaseError as e:
                raise StoreError(f"database {self.path}: migration {number} failed: {e}") from e
            applied.append(number)
        return applied

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): all of it lands, or none of it."""
        with self._lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(f"database {self.path}: {e} (another process holds a write lock; "
                                 "retry when it is done)") from e
            try:
                yield self.conn
            except BaseException as e:
                if self.conn.in_transaction:  # SQLite already rolled back after a full disk or an I/O error
                    self.conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.OperationalError):  # the disk or a lock, not a bug: say what to do
                    raise StoreError(f"database {self.path}: {e}{_advice(e)}") from e
                raise
            else:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.OperationalError as e:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise StoreError(f"database {self.path}: commit failed: {e}{_advice(e)}") from e

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path}: {e}") from e

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple | dict = ()) -> object:
        row = self.execute(sql, params).fetchone()
        return row[0] if row else None


def _advice(error: sqlite3.Error) -> str:
    text = str(error)
    if "full" in text:
        return (" (free disk space, then run the command again: this transaction was rolled back, "
                "everything stored before it is intact)")
    if "locked" in text or "busy" in text:
        return " (another process holds a write lock; retry when it is done)"
    return " (this transaction was rolled back; check the disk, then run `PRAGMA integrity_check`)"


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers' BEGIN...END)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
