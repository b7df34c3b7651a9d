"""django-cq's import path for the decorator: ``from cq.decorators import task``."""

from __future__ import annotations

from .registry import task

__all__ = ["task"]
