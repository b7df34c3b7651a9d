"""Workflows, at django-cq's import path: ``from cq.canvas import group, chord, stages, signature``.

The code lives in ``cq.workflows``: ``trees`` (subtasks, chains, revoking), ``signatures``
(``fn.s()``), ``groups`` (groups, chords and stages), ``errbacks``.
"""

from __future__ import annotations

from .workflows.errbacks import errback_entry, errorback, run_errbacks
from .workflows.groups import Chord, Group, Stages, chord, group, stages
from .workflows.signatures import Signature, signature
from .workflows.trees import chain, revoke, subtask

__all__ = ["Chord", "Group", "Signature", "Stages", "chain", "chord", "errback_entry", "errorback", "group",
           "revoke", "run_errbacks", "signature", "stages", "subtask"]
