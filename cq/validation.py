"""The rules for the values cq stores or accepts, each defined once.

Everything a caller hands cq (arguments, fields, options) is checked here, in the caller, before
anything is written: a value the database refuses would abort the caller's transaction on
PostgreSQL, and one it takes but cannot give back would break the worker that reads it. Text from
task code (errors, tracebacks, log lines, progress messages) is never refused: it is made
storable.

A leaf: it imports nothing of cq but :mod:`cq.exceptions`, so that any module may ask it.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from .exceptions import InvalidQueue, InvalidTask

# --- JSON ---------------------------------------------------------------------------------------

#: The deepest nesting of lists and objects cq stores (the top level is 1). Python's ``json``
#: recurses once per level, within the interpreter's recursion limit (1,000) counted with the
#: frames already on the stack: a value the caller could just write, a worker, deeper in its own
#: stack, could not read back. So cq refuses it, well inside that limit.
MAX_DEPTH = 200
# NaN and infinities refused; other characters left as they are (the text is only inspected).
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUL_ESCAPE = "\\u0000"  # how json writes a NUL inside a string or key
_CANNOT_STORE = "PostgreSQL cannot store it"


def check_storable(value: Any, what: str) -> None:
    """Raise ``InvalidTask`` unless ``value`` is JSON that every database cq supports stores and
    gives back as it was: what ``json.dumps(value, allow_nan=False)`` writes, with no NUL
    (PostgreSQL's jsonb refuses ``\\u0000``) and no lone surrogate (not Unicode) in any string or
    key, nested at most :data:`MAX_DEPTH` deep. ``what`` names the value in the message, e.g.
    "the kwargs of task 'x'": "The kwargs of task 'x' hold NaN at ['a'][2]; PostgreSQL cannot
    store it."

    A common value costs one ``json`` encoding and a few scans of its text; one with more than
    :data:`MAX_DEPTH` brackets also a pass over its lists and objects, and only one with a problem
    (or something that looks like one) a walk over everything, to say what and where.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        _refuse(value, what, error)
        return
    if _NUL_ESCAPE in text or (not text.isascii() and _SURROGATE.search(text)):
        # Perhaps only a backslash followed by "u0000", or a surrogate pair: the walk decides.
        _refuse(value, what, None)
    elif text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        # The count bounds the depth (the brackets may be side by side, or inside strings).
        _refuse(value, what, None)


def is_storable(value: Any) -> bool:
    try:
        check_storable(value, "the value")
    except InvalidTask:
        return False
    return True


def _refuse(value: Any, what: str, error: BaseException | None) -> None:
    found = _first_problem(value)
    if found is None:
        if error is None:
            return
        found = (f"are not JSON-serialisable ({error})", "", "pass ids, strings and numbers, not objects")
    problem, path, advice = found
    where = f" at {path}" if path else ""
    raise InvalidTask(f"{what[:1].upper()}{what[1:]} {problem}{where}; {advice}.")


_CONTAINERS = (list, tuple, dict)  # a tuple: isinstance() is twice as fast with it as with a union


def _too_deep(value: Any) -> bool:
    """Whether ``value``, which json could encode (so it has no cycle), nests deeper than
    :data:`MAX_DEPTH`: one pass over its containers, level by level."""
    level, depth = [value], 1
    while level:
        if depth > MAX_DEPTH:
            return True
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, _CONTAINERS)]
        depth += 1
    return False


_EXIT = object()


def _first_problem(value: Any) -> tuple[str, str, str] | None:
    """``(problem, path, advice)`` for the first thing in ``value`` (depth first, a dict's keys
    before its values) that cq cannot store; ``None`` if there is none. It walks with a stack of
    its own, so no nesting (nor a circular reference) can make it recurse."""
    on_path: set[int] = set()
    stack: list[Any] = [(value, None, 1)]
    while stack:
        entry = stack.pop()
        if entry[0] is _EXIT:
            on_path.discard(entry[1])
            continue
        item, path, depth = entry
        if isinstance(item, str):
            found = _text_problem(item, "a string")
        elif isinstance(item, bool) or item is None:
            found = None
        elif isinstance(item, int):
            found = _int_problem(item)
        elif isinstance(item, float):
            found = _float_problem(item)
        elif isinstance(item, list | tuple | dict):
            if id(item) in on_path:
                found = ("are not JSON-serialisable: a circular reference", "pass ids, strings and numbers, "
                         "not objects")
            elif depth > MAX_DEPTH:
                found = (f"nest lists and objects deeper than {MAX_DEPTH} levels",
                         "cq refuses that, as some processes could not read it back")
            else:
                found = None
                on_path.add(id(item))
                stack.append((_EXIT, id(item)))
                if isinstance(item, dict):
                    children = []
                    for key, child in item.items():
                        found = _key_problem(key)
                        if found is not None:
                            return found[0], _path((path, key)), found[1]
                        children.append((child, (path, key), depth + 1))
                    stack.extend(reversed(children))
                else:
                    stack.extend((item[i], (path, i), depth + 1) for i in range(len(item) - 1, -1, -1))
        else:
            kind = type(item)
            name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            found = (f"are not JSON-serialisable: a value of type {name}", "pass ids, strings and numbers, not objects")
        if found is not None:
            return found[0], _path(path), found[1]
    return None


def _text_problem(text: str, what: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return f"hold a NUL character (\\x00) in {what}", _CANNOT_STORE
    if not text.isascii() and _SURROGATE.search(text):
        return f"hold a lone surrogate in {what}", f"it is not Unicode, and {_CANNOT_STORE}"
    return None


def _int_problem(number: int) -> tuple[str, str] | None:
    try:
        str(number)
    except ValueError:  # longer than sys.get_int_max_str_digits()
        return "hold an integer too long to write as JSON", "pass it as a string"
    return None


def _float_problem(number: float) -> tuple[str, str] | None:
    if math.isfinite(number):
        return None
    name = "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    return f"hold {name}", f"JSON has no such number and {_CANNOT_STORE}"


def _key_problem(key: Any) -> tuple[str, str] | None:
    if isinstance(key, str):
        return _text_problem(key, "a key")
    if isinstance(key, float):
        return _float_problem(key)
    if isinstance(key, int | None):  # bool is an int
        return None
    return (f"are not JSON-serialisable: a key of type {type(key).__qualname__}",
            "keys are strings (or numbers, which become strings)")


def _path(node: tuple[Any, Any] | None) -> str:
    """``['a'][2]`` for the linked path ``((None, 'a'), 2)``; long paths and keys are shortened."""
    keys = []
    while node is not None:
        node, key = node
        keys.append(key)
    parts = [f"[{excerpt(key, 40)}]" for key in reversed(keys)]
    if len(parts) > 12:
        parts = [*parts[:6], f"...({len(parts) - 12} more)...", *parts[-6:]]
    return "".join(parts)


def excerpt(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to about ``limit`` characters, for a message or a log line about a
    value that may be huge (a huge string or bytes is not even copied whole)."""
    if isinstance(value, str | bytes) and len(value) > limit:
        cut = repr(value[:limit])
        return f"{cut}...({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


# --- Text from task code ------------------------------------------------------------------------

#: What a NUL character of text from task code becomes when it is stored: the four characters
#: ``\x00``, as ``repr()`` writes it (PostgreSQL stores no NUL, in text nor in jsonb).
NUL_REPLACEMENT = "\\x00"


def storable_text(text: str) -> str:
    """``text`` made storable by every database cq supports: each NUL written as the four
    characters ``\\x00``, and a lone surrogate (which is not Unicode) as its escape, ``\\udc80``.
    Text that needs neither comes back as it is, at the cost of two scans."""
    if "\x00" in text:
        text = text.replace("\x00", NUL_REPLACEMENT)
    if not text.isascii() and _SURROGATE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# --- Queues, priorities, keys -------------------------------------------------------------------

QUEUE_NAME = re.compile(r"[a-z0-9_-]{1,50}")
QUEUE_RULE = "1-50 of a-z, 0-9, _ and -"


def is_queue_name(value: Any) -> bool:
    return isinstance(value, str) and QUEUE_NAME.fullmatch(value) is not None


def validate_queue_name(value: Any) -> None:
    """A model field's validator of queue names.

    Raises:
        ValidationError: ``value`` is not a queue name.
    """
    if not is_queue_name(value):
        raise ValidationError(f"A queue name is {QUEUE_RULE}.", code="invalid")


def queue_name(value: Any) -> str:
    """``value`` if it is a queue name.

    Raises:
        InvalidTask: it is not.
    """
    if not is_queue_name(value):
        raise InvalidTask(f"Queue {excerpt(value, 60)} must be {QUEUE_RULE}.")
    return cast(str, value)


def controlled_queue(value: Any) -> str:
    """``value`` if it names a queue whose controls may be set.

    Raises:
        InvalidQueue: it is not a queue name.
    """
    if not is_queue_name(value):
        raise InvalidQueue(f"Queue {excerpt(value, 60)} must be {QUEUE_RULE}.")
    return cast(str, value)


def queue_concurrency(value: Any) -> int | None:
    """``value`` if it is a queue's cap: a whole number of at least 1, or ``None`` for no cap.

    Raises:
        InvalidQueue: it is not.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CAP):
        raise InvalidQueue(f"A queue's cap is a whole number from 1 to {MAX_CAP} (or none), "
                           f"not {excerpt(value, 60)}.")
    return value


#: The largest cap of a queue (PostgreSQL's positive integer column holds it).
MAX_CAP = 2**31 - 1

#: Priorities run from lowest to highest, higher first (the range of Django's task framework).
MIN_PRIORITY, MAX_PRIORITY = -100, 100
PRIORITY_RULE = f"priority= takes a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}"


def is_priority(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and MIN_PRIORITY <= value <= MAX_PRIORITY


def priority(value: Any) -> int:
    """``value`` if it is a priority.

    Raises:
        InvalidTask: it is not.
    """
    if not is_priority(value):
        raise InvalidTask(f"{PRIORITY_RULE}, not {excerpt(value, 60)}.")
    return cast(int, value)


#: Longest key (``unique_key``, ``concurrency_key``): the column's length.
KEY_LENGTH = 255
KEY_RULE = f"a string of 1-{KEY_LENGTH} characters, without NUL"


def is_key(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= KEY_LENGTH and _text_problem(value, "") is None


# --- Times --------------------------------------------------------------------------------------

#: The longest ``result_ttl``, in seconds: the most a PositiveIntegerField holds on every database.
MAX_RESULT_TTL = 2_147_483_647


def is_result_ttl(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= MAX_RESULT_TTL


def result_ttl(value: Any) -> int | None:
    """``value`` if it is a ``result_ttl`` (``None``: the default, ``CQ_RESULT_TTL``).

    Raises:
        InvalidTask: it is not a whole number of seconds from 0 to :data:`MAX_RESULT_TTL`.
    """
    if value is not None and not is_result_ttl(value):
        raise InvalidTask(f"result_ttl= takes a whole number of seconds from 0 to {MAX_RESULT_TTL}, "
                          f"not {excerpt(value, 60)}.")
    return cast("int | None", value)


def is_amount(value: Any) -> bool:
    """Whether ``value`` is a finite number, 0 or more (not a bool): a countdown, a progress count."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        return False


def moment(value: Any, what: str) -> datetime:
    """``value``, a datetime, made aware (a naive one is read in the current time zone, as
    Django's forms do); ``what`` names it in the message.

    Raises:
        InvalidTask: it is not a datetime, or it has no instant in UTC (a time at the edge of the
        calendar whose offset carries it past year 1 or 9999): no database could store it.
    """
    if not isinstance(value, datetime):
        raise InvalidTask(f"{what} takes a datetime, not {excerpt(value, 60)}.")
    try:
        if timezone.is_naive(value) and django_settings.USE_TZ:
            value = timezone.make_aware(value)
        if timezone.is_aware(value):
            value.astimezone(UTC)
    except (OverflowError, ValueError) as error:
        raise InvalidTask(f"{what} {value.isoformat()} is no time that can be stored ({error}).") from None
    return cast(datetime, value)


def run_after(countdown: Any = None, eta: Any = None, now: datetime | None = None) -> datetime | None:
    """When a delayed task may run: ``countdown`` seconds after ``now`` (default: now), or at
    ``eta``; ``None`` for at once.

    Raises:
        InvalidTask: both given; a countdown that is not a finite number of seconds, 0 or more,
        or that passes the end of the calendar; an eta that :func:`moment` refuses.
    """
    if countdown is not None and eta is not None:
        raise InvalidTask("Give countdown= or eta=, not both.")
    if countdown is not None:
        if not is_amount(countdown):
            raise InvalidTask(f"countdown= takes a number of seconds, 0 or more, not {excerpt(countdown, 60)}.")
        try:
            return (now or timezone.now()) + timedelta(seconds=countdown)
        except OverflowError:
            raise InvalidTask(f"countdown= of {countdown} seconds runs past the end of the calendar.") from None
    if eta is not None:
        return moment(eta, "eta=")
    return None
