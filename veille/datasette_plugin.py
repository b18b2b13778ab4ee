"""Datasette plugin registered by `veille archive serve` (imported only there: Datasette is optional).

It gives Datasette the veille query syntax and keeps members' personal data out of it.
"""

from __future__ import annotations

import sqlite3

from datasette import hookimpl

from .search import HIDDEN_FROM_DATASETTE, veille_match


@hookimpl(trylast=True)
def prepare_connection(conn: sqlite3.Connection) -> None:
    """`veille_match(q)` for canned queries; `escape_fts` replaced so the table search box speaks veille.

    trylast: Datasette registers its own `escape_fts` in the same hook; ours must come after it.
    """
    conn.create_function("veille_match", 1, veille_match, deterministic=True)
    conn.create_function("escape_fts", 1, veille_match, deterministic=True)
    conn.set_authorizer(_authorizer)


def _authorizer(action: int, table: str | None, column: str | None, _db: str | None, _trigger: str | None) -> int:
    """Members' emails, names and unsubscribe tokens read as NULL, whatever SQL an analyst writes."""
    if action == sqlite3.SQLITE_READ and column in HIDDEN_FROM_DATASETTE.get(table or "", ()):
        return sqlite3.SQLITE_IGNORE
    return sqlite3.SQLITE_OK
