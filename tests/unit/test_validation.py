"""cq.validation: the one place each rule for a stored or accepted value is written."""

from __future__ import annotations

import datetime
import decimal

import pytest
from django.utils import timezone

from cq import validation
from cq.exceptions import InvalidTask


def deep(levels: int, inner: object = 1) -> object:
    value = inner
    for _ in range(levels):
        value = [value]
    return value


def circular() -> list:
    loop: list = []
    loop.append(loop)
    return {"x": [loop]}


@pytest.mark.parametrize("value, message", [
    ({"a": [1, 2, float("nan")]}, "The kwargs of task 'x' hold NaN at ['a'][2]; JSON has no such number and "
                                  "PostgreSQL cannot store it."),
    ([float("inf")], "hold Infinity at [0];"),
    ({"a": {"b": -float("inf")}}, "hold -Infinity at ['a']['b'];"),
    ({float("nan"): 1}, "hold NaN at [nan];"),
    (["ok", "a\x00b"], "hold a NUL character (\\x00) in a string at [1]; PostgreSQL cannot store it."),
    ({"k\x00": 1}, "hold a NUL character (\\x00) in a key at ['k\\x00'];"),
    ([{"s": "\ud800"}], "hold a lone surrogate in a string at [0]['s']; it is not Unicode"),
    ([datetime.date(2026, 1, 1)], "are not JSON-serialisable: a value of type datetime.date at [0]; pass ids"),
    ({"d": decimal.Decimal("1.5")}, "a value of type decimal.Decimal at ['d']"),
    ([{1, 2}], "a value of type set at [0]"),
    ({(1, 2): "x"}, "a key of type tuple at [(1, 2)]"),
    ([10 ** 5000], "hold an integer too long to write as JSON at [0]; pass it as a string."),
    (circular(), "a circular reference at ['x'][0][0]"),
    (deep(validation.MAX_DEPTH + 1), f"nest lists and objects deeper than {validation.MAX_DEPTH} levels at [0][0]"),
    (deep(100_000), f"deeper than {validation.MAX_DEPTH} levels at [0][0][0][0][0][0]...(188 more)...[0]"),
])
def test_what_no_database_stores_is_refused_naming_what_and_where(value, message):
    with pytest.raises(InvalidTask) as refused:
        validation.check_storable(value, "the kwargs of task 'x'")
    assert message in str(refused.value)
    assert not validation.is_storable(value)


@pytest.mark.parametrize("value", [
    None, 0, -1.5, 10 ** 300, "", "é, 😀, 中文", "a backslash and u0000: \\u0000", {"1": [True, None]},
    {1: "int keys become strings", None: 2, 1.5: 3}, (1, (2, 3)), deep(validation.MAX_DEPTH),
    [[]] * 1000, "\x01\x1f\t", {"x": "y" * 100_000},
])
def test_json_every_database_stores_passes(value):
    validation.check_storable(value, "the args")
    assert validation.is_storable(value)


def test_a_huge_value_is_named_by_an_excerpt():
    key = "k" * 3_000_000
    with pytest.raises(InvalidTask) as refused:
        validation.check_storable({key: float("nan")}, "the args")
    assert len(str(refused.value)) < 300
    assert "(3000000 characters)" in str(refused.value)
    assert len(validation.excerpt(b"x" * 3_000_000)) < 250
    assert len(validation.excerpt(["y" * 1000] * 3000)) < 250


def test_text_from_task_code_is_made_storable_not_refused():
    assert validation.storable_text("plain, é and 😀") == "plain, é and 😀"
    assert validation.storable_text("a\x00b\x00") == "a\\x00b\\x00"
    assert validation.storable_text("bad \udc80 byte") == "bad \\udc80 byte"
    assert validation.is_storable(validation.storable_text("\x00\ud800"))


def test_queue_names():
    assert validation.queue_name("reports-2_a") == "reports-2_a"
    for bad in ("", "Reports", "a" * 51, "a b", "q\x00", 5, None, ["default"]):
        assert not validation.is_queue_name(bad)
        with pytest.raises(InvalidTask, match="must be 1-50 of a-z, 0-9, _ and -"):
            validation.queue_name(bad)


def test_priorities():
    assert [validation.priority(p) for p in (-100, 0, 100)] == [-100, 0, 100]
    for bad in (101, -101, 1.5, True, "5", None, 10 ** 30):
        assert not validation.is_priority(bad)
        with pytest.raises(InvalidTask, match="priority= takes a whole number from -100 to 100"):
            validation.priority(bad)


def test_keys():
    assert validation.is_key("k") and validation.is_key("k" * validation.KEY_LENGTH)
    for bad in ("", "k" * (validation.KEY_LENGTH + 1), "a\x00b", "\ud800", 5, None):
        assert not validation.is_key(bad)


def test_result_ttl():
    assert [validation.result_ttl(v) for v in (None, 0, validation.MAX_RESULT_TTL)] == [None, 0, 2_147_483_647]
    for bad in (-1, 1.5, True, "5", 2_147_483_648, float("nan")):
        with pytest.raises(InvalidTask, match="result_ttl= takes a whole number of seconds from 0 to 2147483647"):
            validation.result_ttl(bad)


def test_countdown_and_eta():
    now = timezone.now()
    assert validation.run_after() is None
    assert validation.run_after(countdown=0, now=now) == now
    assert validation.run_after(countdown=1.5, now=now) == now + datetime.timedelta(seconds=1.5)
    for bad in (-1, float("nan"), float("inf"), True, "5", 10 ** 400, [1]):
        with pytest.raises(InvalidTask, match="countdown= takes a number of seconds, 0 or more"):
            validation.run_after(countdown=bad)
    for huge in (1e300, 10 ** 12):  # past what a timedelta holds; past the year 9999
        with pytest.raises(InvalidTask, match="runs past the end of the calendar"):
            validation.run_after(countdown=huge)
    with pytest.raises(InvalidTask, match="not both"):
        validation.run_after(countdown=1, eta=now)
    naive = datetime.datetime(2030, 1, 1, 12)
    assert validation.run_after(eta=naive) == timezone.make_aware(naive)
    for bad in ("2030-01-01", 5, datetime.date(2030, 1, 1)):
        with pytest.raises(InvalidTask, match="eta= takes a datetime"):
            validation.run_after(eta=bad)
    edges = [datetime.datetime(9999, 12, 31, 23, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=-23))),
             datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))]
    for edge in edges:
        with pytest.raises(InvalidTask, match="is no time that can be stored"):
            validation.run_after(eta=edge)


def test_amounts():
    assert all(validation.is_amount(v) for v in (0, 1, 2.5, 10 ** 300))
    assert not any(validation.is_amount(v) for v in (-1, float("nan"), float("inf"), True, "1", None, 10 ** 400))


def test_the_old_names_stay_importable_from_the_registry():
    from cq import registry

    assert registry.QUEUE_NAME is validation.QUEUE_NAME and registry.is_priority is validation.is_priority
    assert (registry.MIN_PRIORITY, registry.MAX_PRIORITY, registry.KEY_LENGTH) == (-100, 100, 255)
    assert registry.PRIORITY_RULE == validation.PRIORITY_RULE
