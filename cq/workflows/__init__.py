"""Workflows: task trees, and the groups, chords and stages built from them.

- ``trees``: subtasks, chained tasks, and revoking a task with everything under and after it.
- ``signatures``: ``fn.s(...)``, a call checked where it is made and storable as JSON.
- ``groups``: groups, chords and stages, written as a WAITING row with its first subtasks.
- ``rules``: how each kind of workflow settles as its subtasks finish.
- ``errbacks``: functions called when a task finally fails.

The public import path is ``cq.canvas``. A waiting parent is settled by the engine
(``cq.engine.transitions``), which asks ``rules`` when the parent is a workflow.
"""
