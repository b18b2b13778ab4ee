"""Storage of the topics domain."""

from __future__ import annotations


class TopicsMixin:
    pass
