"""The exception hierarchy: one root, and every error names what failed (file and line, or source and URL).

Library errors (httpx, yaml, sqlite3, smtplib) are wrapped only at the boundary, with `raise ... from e`,
so the cause stays chained for the logs while the message says what to do.
"""

from __future__ import annotations


class VeilleError(Exception):
    """Root of every error veille raises on purpose."""

    hint: str = ""

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.hint})" if self.hint and self.hint not in message else message


class ConfigError(VeilleError):
    """A configuration file (sources.yaml, topics.yaml, veille.yaml, a CSV) is invalid.

    The message always starts with `path:line:` so editors and staff jump straight to the problem.
    """

    def __init__(self, path: str, line: int | None, key: str | None, message: str, hint: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.key = key
        self.message = message
        self.hint = hint
        where = f"{self.path}:{line}" if line else self.path
        what = f" [{key}]" if key else ""
        super().__init__(f"{where}:{what} {message}")


class SourceError(VeilleError):
    """Something went wrong with one source; the rest of the pass carries on."""

    def __init__(self, source_id: str | None, url: str, message: str, hint: str = "") -> None:
        self.source_id = source_id
        self.url = url
        self.message = message
        self.hint = hint
        who = f"source {source_id!r}" if source_id else "url"
        super().__init__(f"{who} <{url}>: {message}")


class FetchError(SourceError):
    """An HTTP fetch failed; `reason` is one of `veille.fetch.REASONS`, the short list staff act on."""

    def __init__(
        self,
        source_id: str | None,
        url: str,
        reason: str,
        message: str,
        hint: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        super().__init__(source_id, url, message, hint)


class ParseError(SourceError):
    """A document could not be read as the source's declared type (feed, listing page, sitemap)."""


class ExtractError(SourceError):
    """The main text of a page could not be extracted."""


class StoreError(VeilleError):
    """The SQLite archive refused an operation (locked, full disk, newer schema...)."""


class QueryError(VeilleError):
    """A search query or topic `query:` rule has a syntax error at `position` (0-based character offset)."""

    def __init__(self, query: str, position: int, message: str) -> None:
        self.query = query
        self.position = position
        self.message = message
        pointer = " " * position + "^"
        super().__init__(f"{message} at position {position + 1}\n  {query}\n  {pointer}")


class MailError(VeilleError):
    """Delivering a digest failed; `permanent` tells whether retrying can help (SMTP 5xx vs 4xx)."""

    def __init__(self, recipient: str, message: str, permanent: bool, code: int | None = None) -> None:
        self.recipient = recipient
        self.permanent = permanent
        self.code = code
        super().__init__(f"mail to <{recipient}>: {message}")


class LockError(VeilleError):
    """Another veille process already holds the database's scheduler lock."""
