"""Storage of the archive domain."""

from __future__ import annotations


class ArchiveMixin:
    pass
