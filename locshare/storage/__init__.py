"""Storage: the records, the one seam (:class:`Storage`) and its adapters."""

from __future__ import annotations

from ._memory import InMemoryStorage

__all__ = ["InMemoryStorage"]
