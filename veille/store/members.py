"""Storage of the members domain: who receives the weekly digest, and which topics they follow."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Literal

if TYPE_CHECKING:
    from . import Store


@dataclass(frozen=True)
class Member:
    """A member of the association; `topics` is None when they follow every topic."""

    id: int
    email: str
    name: str
    organisation: str
    topics: tuple[str, ...] | None
    active: bool
    unsubscribe_token: str
    created_at: datetime
    updated_at: datetime

    def follows(self, topic_id: str) -> bool:
        return self.topics is None or topic_id in self.topics


UpsertOutcome = Literal["created", "updated", "unchanged"]


def _new_token() -> str:
    return secrets.token_urlsafe(24)


class MembersMixin:
    def _member_from_row(self: "Store", row: sqlite3.Row, topics: tuple[str, ...]) -> Member:
        from . import parse_iso

        return Member(
            id=row["id"], email=row["email"], name=row["name"], organisation=row["organisation"],
            topics=None if row["all_topics"] else topics, active=bool(row["active"]),
            unsubscribe_token=row["unsubscribe_token"], created_at=parse_iso(row["created_at"]),
            updated_at=parse_iso(row["updated_at"]),
        )

    def _member_topics(self: "Store", member_id: int) -> tuple[str, ...]:
        rows = self.conn.execute("SELECT topic_id FROM member_topics WHERE member_id = ? ORDER BY topic_id",
                                 (member_id,)).fetchall()
        return tuple(r[0] for r in rows)

    def get_member(self: "Store", email: str) -> Member | None:
        row = self.conn.execute("SELECT * FROM members WHERE email = ?", (email.strip(),)).fetchone()
        return self._member_from_row(row, self._member_topics(row["id"])) if row else None

    def member_by_token(self: "Store", token: str) -> Member | None:
        row = self.conn.execute("SELECT * FROM members WHERE unsubscribe_token = ?", (token,)).fetchone()
        return self._member_from_row(row, self._member_topics(row["id"])) if row else None

    def list_members(self: "Store", active_only: bool = False) -> list[Member]:
        """All members ordered by email, with their topics, in two queries (digests list thousands)."""
        topics: dict[int, list[str]] = {}
        for member_id, topic_id in self.conn.execute(
            "SELECT member_id, topic_id FROM member_topics ORDER BY member_id, topic_id"
        ):
            topics.setdefault(member_id, []).append(topic_id)
        where = "WHERE active = 1 " if active_only else ""
        rows = self.conn.execute(f"SELECT * FROM members {where}ORDER BY email").fetchall()
        return [self._member_from_row(r, tuple(topics.get(r["id"], ()))) for r in rows]

    def upsert_member(
        self: "Store", email: str, name: str = "", organisation: str = "",
        topics: Iterable[str] | None = None, *, update: bool = True,
    ) -> tuple[Member, UpsertOutcome]:
        """Create the member, or (with `update`) bring name, organisation and topics up to date.

        The active flag of an existing member is left alone: re-importing a list must not resubscribe
        someone who unsubscribed.
        """
        from . import iso, utcnow

        wanted = None if topics is None else tuple(sorted(set(topics)))
        now = iso(utcnow())
        with self.transaction():
            row = self.conn.execute("SELECT * FROM members WHERE email = ?", (email,)).fetchone()
            if row is None:
                member_id = self.conn.execute(
                    "INSERT INTO members (email, name, organisation, all_topics, active, unsubscribe_token, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                    (email, name, organisation, int(wanted is None), _new_token(), now, now),
                ).lastrowid
                self._write_member_topics(member_id, wanted)
                outcome: UpsertOutcome = "created"
            else:
                member_id = row["id"]
                current = None if row["all_topics"] else self._member_topics(member_id)
                same = row["name"] == name and row["organisation"] == organisation and current == wanted
                if same or not update:
                    outcome = "unchanged"
                else:
                    self.conn.execute(
                        "UPDATE members SET name = ?, organisation = ?, all_topics = ?, updated_at = ? WHERE id = ?",
                        (name, organisation, int(wanted is None), now, member_id),
                    )
                    self._write_member_topics(member_id, wanted)
                    outcome = "updated"
        member = self.get_member(email)
        assert member is not None
        return member, outcome

    def _write_member_topics(self: "Store", member_id: int, topics: tuple[str, ...] | None) -> None:
        self.conn.execute("DELETE FROM member_topics WHERE member_id = ?", (member_id,))
        if topics:
            self.conn.executemany("INSERT INTO member_topics (member_id, topic_id) VALUES (?, ?)",
                                  [(member_id, t) for t in topics])

    def set_member_topics(self: "Store", email: str, topics: Iterable[str] | None) -> Member | None:
        """Replace the topics a member follows (None: all topics); None when there is no such member."""
        from . import iso, utcnow

        wanted = None if topics is None else tuple(sorted(set(topics)))
        with self.transaction():
            row = self.conn.execute("SELECT id FROM members WHERE email = ?", (email,)).fetchone()
            if row is None:
                return None
            self.conn.execute("UPDATE members SET all_topics = ?, updated_at = ? WHERE id = ?",
                              (int(wanted is None), iso(utcnow()), row["id"]))
            self._write_member_topics(row["id"], wanted)
        return self.get_member(email)

    def set_member_active(self: "Store", email: str, active: bool) -> bool:
        from . import iso, utcnow

        with self.transaction():
            return self.conn.execute("UPDATE members SET active = ?, updated_at = ? WHERE email = ?",
                                     (int(active), iso(utcnow()), email)).rowcount > 0

    def unsubscribe(self: "Store", token: str) -> Member | None:
        """One-click unsubscribe (RFC 8058): deactivate the member holding this token."""
        from . import iso, utcnow

        with self.transaction():
            self.conn.execute("UPDATE members SET active = 0, updated_at = ? WHERE unsubscribe_token = ?",
                              (iso(utcnow()), token))
        return self.member_by_token(token)

    def remove_member(self: "Store", email: str) -> bool:
        """Delete a member and their delivery history (a removal request is an erasure request)."""
        with self.transaction():
            return self.conn.execute("DELETE FROM members WHERE email = ?", (email,)).rowcount > 0
