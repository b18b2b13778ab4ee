"""Storage of the members domain."""

from __future__ import annotations


class MembersMixin:
    pass
