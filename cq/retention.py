"""Retention: how long a finished task is kept, by rules per function and final status.

``CQ_RETENTION`` is a list of rules, tried in order; the first that matches a task decides::

    CQ_RETENTION = [
        {"function": "shop.tasks.ping", "status": "SUCCESS", "keep": 3600},
        {"status": ["FAILURE", "LOST", "INCOMPLETE"], "keep": timedelta(days=30)},
        {"function": "billing.tasks.invoice", "keep": None},   # for ever
    ]

A rule's ``function`` is a task function's name or a list of names, ``status`` a final status or
a list of them (a name, a code or a ``TaskStatus``); either left out (or ``None``) matches all.
``keep`` is seconds or a ``timedelta``; ``None`` keeps the task for ever. A task's own
``result_ttl`` wins over every rule, and ``CQ_RESULT_TTL`` is kept when no rule matches.

The rule is resolved once, when the task finishes, into its ``result_expiry``: the sweeper then
deletes exactly the rows that are due. Looking it up costs a dictionary read per finished task
(:func:`keep` remembers each function and status it was asked about). The rules are checked when
first read, and by a system check at startup; a bad rule raises ``ImproperlyConfigured`` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .conf import settings
from .statuses import DONE, TaskStatus

#: The longest time a rule may keep a task, in seconds (as for ``result_ttl``); ``None`` is for ever.
MAX_KEEP = 2_147_483_647
_KEYS = frozenset({"function", "status", "keep"})


@dataclass(frozen=True)
class Rule:
    """One parsed rule: the functions and final statuses it matches (``None``: all), and the
    seconds it keeps them (``None``: for ever)."""

    functions: frozenset[str] | None
    statuses: frozenset[TaskStatus] | None
    keep: float | None

    def matches(self, func_name: str, status: str) -> bool:
        return ((self.functions is None or func_name in self.functions)
                and (self.statuses is None or status in self.statuses))


def rules() -> tuple[Rule, ...]:
    """``CQ_RETENTION``, parsed (once per change of settings).

    Raises:
        ImproperlyConfigured: a rule is not one; the message names it.
    """
    global _rules
    if _rules is None:
        _rules = parse(settings.RETENTION)
    return _rules


def keep(func_name: str, status: str, result_ttl: int | None = None) -> float | None:
    """Seconds to keep a task of ``func_name`` that ended ``status``: its own ``result_ttl`` if
    it has one, else the first matching rule's, else ``CQ_RESULT_TTL``. ``None``: for ever."""
    if result_ttl is not None:
        return result_ttl
    key = (func_name, status)
    try:
        return _kept[key]
    except KeyError:
        pass
    found = next((rule.keep for rule in rules() if rule.matches(func_name, status)), _DEFAULT)
    _kept[key] = found = settings.RESULT_TTL if found is _DEFAULT else found
    return found


def parse(value: Any) -> tuple[Rule, ...]:
    """The rules written in ``value`` (the setting's form, see above).

    Raises:
        ImproperlyConfigured: ``value`` is not a list of rules; the message names the bad one.
    """
    if value is None:
        return ()
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise ImproperlyConfigured(f"CQ_RETENTION is a list of rules (dicts), not {value!r}.")
    return tuple(_rule(index, rule) for index, rule in enumerate(value))


def _rule(index: int, rule: Any) -> Rule:
    def bad(what: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"CQ_RETENTION[{index}] ({rule!r}): {what}")

    if not isinstance(rule, dict):
        raise bad('a rule is a dict with "function", "status" and "keep".')
    unknown = set(rule) - _KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(map(repr, sorted(map(str, unknown))))}; a rule takes "
                  f'"function", "status" and "keep".')
    if "keep" not in rule:
        raise bad('"keep" is missing: seconds, a timedelta, or None to keep the tasks for ever.')
    functions = _names(rule.get("function"))
    if functions is not None and not all(isinstance(name, str) and name for name in functions):
        raise bad('"function" is a task function\'s name, a list of names, or None for every function.')
    statuses = _names(rule.get("status"))
    if statuses is not None:
        statuses = frozenset(_status(name, bad) for name in statuses)
    return Rule(functions, statuses, _seconds(rule["keep"], bad))


def _names(value: Any) -> frozenset[Any] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        return frozenset([value])
    return frozenset(value)


def _status(name: Any, bad: Any) -> TaskStatus:
    for status in TaskStatus:
        if isinstance(name, str) and name in (status.value, status.name, status.name.lower(), status.label):
            if status in DONE:
                return status
            break
    finals = ", ".join(status.name for status in sorted(DONE, key=lambda status: status.name))
    raise bad(f'"status" takes final statuses ({finals}), not {name!r}.')


def _seconds(value: Any, bad: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_KEEP:
        raise bad(f'"keep" is seconds from 0 to {MAX_KEEP} or a timedelta, or None to keep the tasks '
                  f"for ever, not {value!r}.")
    return value


_rules: tuple[Rule, ...] | None = None
_kept: dict[tuple[str, str], float | None] = {}
_DEFAULT: Any = object()


def _forget(**kwargs: Any) -> None:
    global _rules
    _rules = None
    _kept.clear()


setting_changed.connect(_forget, dispatch_uid="cq.retention")
