"""``@task`` and the table of registered task functions.

Only a registered function can run: a name coming from the database, the
admin or the API is looked up here, never imported from a dotted path.

Looking a function up: :func:`find` and :func:`find_for_row` give ``None`` when
nothing is registered; :func:`require` raises ``TaskNotRegistered``. :func:`find_for_row`
also asks the ``finders`` (a Django task a row names, which this process has not imported yet).
A name is a function's own or one of its ``aliases`` (its names before a rename). A worker
claims only rows :func:`claimable` says it can run: others wait, QUEUED, for a worker that can.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from django.core.exceptions import ImproperlyConfigured

from . import validation, verbs
from .exceptions import InvalidTask, TaskNotRegistered

# The rules are cq.validation's; these names stay importable from here.
from .validation import KEY_LENGTH, MAX_PRIORITY, MIN_PRIORITY, PRIORITY_RULE, QUEUE_NAME, is_priority  # noqa: F401

P = ParamSpec("P")
R = TypeVar("R")

RetryRule = type[BaseException] | BaseException | Callable[[BaseException], bool]

_registry: dict[str, TaskFunction[Any, Any]] = {}
#: Each alias, and the name of the function it finds.
_aliases: dict[str, str] = {}
#: ``rate_limit``: how many starts per second, minute or hour, e.g. "10/m".
RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}


class TaskFunction(Generic[P, R]):
    """What ``@task`` returns: still a plain function, plus ``delay`` and ``delay_args``.

    Calling it runs the function inline, in this process, with an inline
    stand-in for ``cqt``; ``delay`` queues it for a worker.
    """

    def __init__(self, func: Callable[..., R], name: str, *, atomic: bool = True, retries: int = 0,
                 retry_exceptions: Iterable[RetryRule] = (), queue: str = "default", retry_on_lost: bool = False,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 fields: dict[str, Any] | None = None, priority: int = 0,
                 concurrency_key: str | Callable[..., str | None] | None = None, max_concurrency: int | None = None,
                 rate_limit: str | None = None, aliases: Iterable[str] = ()) -> None:
        given = [] if isinstance(aliases, str) or not isinstance(aliases, Iterable) else list(aliases)
        if not given and aliases or not all(isinstance(alias, str) and alias.strip() for alias in given):
            raise ImproperlyConfigured(f"@task {name!r}: aliases= takes a list of names (the names its rows may "
                                       f"have been queued under), not {aliases!r}.")
        if retries < 0:
            raise ImproperlyConfigured(f"@task {name!r}: retries must be 0 or more, not {retries}.")
        if not validation.is_queue_name(queue):
            raise ImproperlyConfigured(f"@task {name!r}: queue {queue!r} must be {validation.QUEUE_RULE}.")
        for limit in (time_limit, soft_time_limit):
            if limit is not None and limit <= 0:
                raise ImproperlyConfigured(f"@task {name!r}: time limits are seconds above 0, not {limit}.")
        if not isinstance(fields or {}, dict):
            raise ImproperlyConfigured(f"@task {name!r}: fields= takes a dict, not {fields!r}.")
        if not validation.is_priority(priority):
            raise ImproperlyConfigured(f"@task {name!r}: {validation.PRIORITY_RULE}, not {priority!r}.")
        _check_concurrency(name, concurrency_key, max_concurrency)
        self.func = func
        self.name = name
        self.fields = dict(fields or {})
        self.priority = priority
        self.atomic = atomic
        self.retries = retries
        self.retry_exceptions = tuple(retry_exceptions)
        self.queue = queue
        self.retry_on_lost = retry_on_lost
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.concurrency_key = concurrency_key
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        #: Other names its rows may carry (its names before a rename): they run it too.
        self.aliases = tuple(dict.fromkeys(alias for alias in given if alias != name))
        #: Shortest time between two starts under ``rate_limit``.
        self.rate_interval = None if rate_limit is None else _parse_rate(name, rate_limit)
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast("R", verbs.engine().run_inline(self, args, kwargs).unwrap())

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Queue a run with these arguments; returns its ``Task`` row."""
        return self.delay_args(args, kwargs)

    def delay_args(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                   submit: bool = True, **options: Any) -> Any:
        """Like ``delay``, with options: ``submit=False`` leaves the task PENDING
        until ``task.submit()``; ``parent``, ``result_ttl`` and ``force_chain``
        set those fields of the row.
        """
        return verbs.engine().delay(self, args, kwargs, submit=submit, **options)

    def using(self, **options: Any) -> Bound:
        """These options (those of ``delay_args``: ``fields``, ``priority``, ``queue``,
        ``countdown``...) for the runs queued through what it returns:
        ``send_invoice.using(priority=10, fields={"customer": 42}).delay(invoice_id)``."""
        return Bound(self, options)

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """A :class:`~cq.workflows.signatures.Signature` of a run with these arguments, for ``group``,
        ``chord`` and ``stages`` (``cq.canvas``); checked now, so bad arguments fail here.

        Raises:
            InvalidTask: the arguments are not JSON.
        """
        return verbs.engine().signature(self, args, kwargs)

    def delay_many(self, calls: Iterable[Any], **options: Any) -> list[Any]:
        """Queue one run per call (a list of arguments or a dict of keyword arguments) in one
        INSERT and one pipelined send; returns the ``Task`` rows."""
        return verbs.engine().delay_many(self, calls, **options)

    @property
    def limited(self) -> bool:
        """Whether its tasks must be admitted (a concurrency or rate limit) before they run."""
        return self.max_concurrency is not None or self.rate_interval is not None

    def concurrency_key_for(self, args: Iterable[Any], kwargs: dict[str, Any]) -> str | None:
        """The concurrency key of a run with these arguments (``None``: not limited).

        Raises:
            InvalidTask: the key function raised, or returned something other than a string.
        """
        key = self.concurrency_key
        if callable(key):
            try:
                key = key(*args, **kwargs)
            except Exception as error:
                raise InvalidTask(f"The concurrency_key of task {self.name!r} raised {type(error).__name__}: "
                                  f"{error}; it is called with the task's arguments, without cqt.") from error
        if key is not None and not validation.is_key(key):
            raise InvalidTask(f"The concurrency_key of task {self.name!r} gave {validation.excerpt(key, 60)}; "
                              f"it must give {validation.KEY_RULE}, or None for no limit.")
        return key

    def should_retry(self, error: BaseException, retries_done: int) -> bool:
        """Whether a run that raised ``error`` gets another attempt."""
        if retries_done >= self.retries:
            return False
        if not self.retry_exceptions:
            return True
        return any(_matches(rule, error) for rule in self.retry_exceptions)

    def should_retry_lost(self, retries_done: int) -> bool:
        """Whether a run lost with its worker gets another attempt (one at least, with ``retry_on_lost``)."""
        return self.retry_on_lost and retries_done < max(self.retries, 1)


class Bound:
    """A task function with options given ahead: what ``fn.using(...)`` returns."""

    def __init__(self, fn: TaskFunction[Any, Any], options: dict[str, Any]) -> None:
        self.fn, self.options = fn, options

    def __repr__(self) -> str:
        return f"<TaskFunction {self.fn.name} using {self.options!r}>"

    def using(self, **options: Any) -> Bound:
        return Bound(self.fn, {**self.options, **options})

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn.delay_args(args, kwargs, **self.options)

    def delay_args(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        return self.fn.delay_args(args, kwargs, **{**self.options, **options})

    def delay_many(self, calls: Iterable[Any], **options: Any) -> list[Any]:
        return self.fn.delay_many(calls, **{**self.options, **options})


def _check_concurrency(name: str, key: Any, limit: Any) -> None:
    if key is not None and not (callable(key) or validation.is_key(key)):
        raise ImproperlyConfigured(f"@task {name!r}: concurrency_key is {validation.KEY_RULE}, or a function of the "
                                   f"task's arguments that returns one, not {key!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ImproperlyConfigured(f"@task {name!r}: max_concurrency is a whole number, 1 or more, not {limit!r}.")
    if (key is None) != (limit is None):
        raise ImproperlyConfigured(f"@task {name!r}: give concurrency_key and max_concurrency together: the key "
                                   f"says which tasks count against one limit, max_concurrency how many may run.")


def _parse_rate(name: str, rate: Any) -> timedelta:
    """The shortest time between two starts for ``rate``, e.g. 6 s for "10/m"."""
    match = RATE.fullmatch(rate) if isinstance(rate, str) else None
    if match is None or int(match[1]) < 1:
        raise ImproperlyConfigured(f"@task {name!r}: rate_limit is a number of starts, 1 or more, per second, "
                                   f"minute or hour, as \"10/s\", \"10/m\" or \"10/h\", not {rate!r}.")
    return timedelta(seconds=_RATE_UNITS[match[2]] / int(match[1]))


def _matches(rule: RetryRule, error: BaseException) -> bool:
    if isinstance(rule, type) and issubclass(rule, BaseException):
        return isinstance(error, rule)
    if isinstance(rule, BaseException):
        return isinstance(error, type(rule))
    return bool(cast(Callable[[BaseException], Any], rule)(error))


@overload
def task(func: Callable[..., R], /) -> TaskFunction[Any, R]: ...
@overload
def task(name: str | None = None, atomic: bool = True, *, retries: int = 0,
         retry_exceptions: Iterable[RetryRule] | RetryRule = (), queue: str = "default",
         retry_on_lost: bool = False, time_limit: float | None = None, soft_time_limit: float | None = None,
         fields: dict[str, Any] | None = None, priority: int = 0,
         concurrency_key: str | Callable[..., str | None] | None = None, max_concurrency: int | None = None,
         rate_limit: str | None = None,
         aliases: Iterable[str] = ()) -> Callable[[Callable[..., R]], TaskFunction[Any, R]]: ...


def task(  # type: ignore[misc]  # the name comes positionally (as name_or_func) or as name=
        name_or_func: Any = None, atomic: bool = True, *, name: str | None = None, **options: Any) -> Any:
    """Register a task function. Its first parameter, ``cqt``, is the running task.

    Usable bare (``@task``) or with options: ``@task('name')``, ``@task('name', False)``
    (not atomic), ``@task(atomic=False)``, ``@task(retries=3, retry_exceptions=[OSError,
    lambda e: 'timeout' in str(e)])``. An empty ``retry_exceptions`` retries any error.
    ``queue`` routes its tasks to workers started with ``--queues``; ``retry_on_lost``
    retries a run whose worker died; ``time_limit`` and ``soft_time_limit`` are seconds;
    ``fields`` is metadata every run starts with; ``priority`` (-100 to 100, higher first)
    orders runs within a queue.
    ``concurrency_key`` (a string, or a function of the task's arguments returning one) with
    ``max_concurrency`` limits how many tasks of one key run at once; ``rate_limit`` ("10/m")
    how often tasks of this function start. See ``cq.engine.limits``.
    ``aliases`` are other names it answers to: after a rename, the old dotted path, so that
    rows queued under it still run (``@task(aliases=["old.module.send_email"])``).

    Raises:
        ImproperlyConfigured: an option is out of range, or a name or alias is another
            function's, when the decorator runs.
    """
    if callable(name_or_func):
        return _register(name_or_func, name, atomic, options)
    if name_or_func is not None and name is not None:
        raise TypeError("@task takes the name once: positionally or as name=, not both.")
    given_name = name_or_func if name is None else name
    return lambda func: _register(func, given_name, atomic, options)


def register(func: Callable[..., Any], name: str, atomic: bool = True, **options: Any) -> TaskFunction[Any, Any]:
    """Register ``func`` as ``name`` with ``@task``'s options, as ``@task(name)`` does (``cq.backends``
    registers Django's task functions with it)."""
    return _register(func, name, atomic, options)


def _register(func: Callable[..., Any], name: str | None, atomic: bool,
              options: dict[str, Any]) -> TaskFunction[Any, Any]:
    rules = options.get("retry_exceptions", ())
    if isinstance(rules, type) or not isinstance(rules, Iterable):
        options = {**options, "retry_exceptions": [rules]}
    name = name or f"{func.__module__}.{func.__qualname__}"
    fn: TaskFunction[Any, Any] = TaskFunction(func, name, atomic=atomic, **options)
    existing = _registry.get(name)
    if existing is not None and _origin(existing.func) != _origin(func):
        raise ImproperlyConfigured(
            f"Two task functions are registered as {name!r}: {_origin(existing.func)} and "
            f"{_origin(func)}. Give one of them another name with @task('other-name')."
        )
    for taken in (name, *fn.aliases):
        other = _registry.get(_aliases.get(taken, taken))
        if other is not None and other.name != name:
            what = "an alias" if taken in _aliases else "the name"
            raise ImproperlyConfigured(f"@task {name!r}: {taken!r} is already {what} of task function "
                                       f"{other.name!r} ({_origin(other.func)}); remove it from one of them.")
    if existing is not None:  # the same function registered again (its module imported again)
        for alias in existing.aliases:
            _aliases.pop(alias, None)
    _registry[name] = fn
    _aliases.update(dict.fromkeys(fn.aliases, name))
    global _claimable
    _claimable = None
    return fn


def _origin(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


#: Callables ``find(row)`` that may find the function of a task row whose name is not registered
#: in this process (``cq.backends`` imports a Django task from the signed path its row keeps), and
#: the keys of a row's ``fields`` that mark the rows they may find: see :func:`add_finder`.
finders: list[Callable[[Any], TaskFunction[Any, Any] | None]] = []
_marks: list[str] = []
#: Names of marked rows the finders could not find a function for in this process (its code lacks
#: the module): this process claims them no more, and leaves them to workers that have it.
unfound: set[str] = set()
_claimable: tuple[list[str], list[str], list[str]] | None = None


def add_finder(finder: Callable[[Any], TaskFunction[Any, Any] | None], mark: str) -> None:
    """Ask ``finder`` for the function of a row this process does not know whose ``fields`` hold
    the key ``mark``; it may refuse a row for good by raising ``TaskNotRegistered``."""
    global _claimable
    finders.append(finder)
    _marks.append(mark)
    _claimable = None


def find(name: str) -> TaskFunction[Any, Any] | None:
    """The task function registered as ``name`` (or with ``name`` among its aliases), or ``None``."""
    return _registry.get(name) or _registry.get(_aliases.get(name, ""))


def require(name: str) -> TaskFunction[Any, Any]:
    """The task function registered as ``name``.

    Raises:
        TaskNotRegistered: no ``@task`` has that name (its module may not be imported).
    """
    fn = find(name)
    if fn is None:
        raise TaskNotRegistered(
            f"No task function is registered as {name!r}. Decorate it with @cq.task and make sure "
            f"its module is imported (cq imports each installed app's tasks.py)."
        )
    return fn


def find_for_row(task: Any, *, strict: bool = False) -> TaskFunction[Any, Any] | None:
    """The task function a task row runs, or ``None``: the one registered under its ``func_name``
    (or an alias), else the first that one of the ``finders`` finds. A finder may refuse a row
    for good (a Django task whose path was forged) by raising: that gives ``None``, or with
    ``strict``, the error.

    Raises:
        TaskNotRegistered: with ``strict``, a finder refused the row.
    """
    fn = find(task.func_name)
    for finder in finders if fn is None else ():
        try:
            fn = finder(task)
        except TaskNotRegistered:
            if strict:
                raise
            return None
        if fn is not None:
            break
    return fn


def name_of(func: TaskFunction[Any, Any] | Callable[..., Any] | str) -> str:
    """The registered name of a task function, given it or its name.

    Raises:
        TaskNotRegistered: ``func`` is not a registered task function.
    """
    if isinstance(func, TaskFunction):
        return func.name
    if isinstance(func, str):
        return require(func).name
    for fn in _registry.values():
        if fn.func is func:
            return fn.name
    raise TaskNotRegistered(f"{func!r} is not a task function: decorate it with @cq.task.")


def names() -> list[str]:
    """Every registered name, sorted (for the admin's choices); aliases are not among them."""
    return sorted(_registry)


def known() -> list[str]:
    """The names of the functions this process runs, aliases included, sorted (``Worker.functions``)."""
    return claimable()[0]


def claimable() -> tuple[list[str], list[str], list[str]]:
    """What a worker of this process may claim: rows whose name is among the first list (the
    known names); and rows whose ``fields`` hold one of the second (finders' marks) unless their
    name is among the third (``unfound``). Built once, until a function is registered or a name
    is found unfound: a claim passes these lists as they are."""
    global _claimable
    if _claimable is None:
        _claimable = (sorted([*_registry, *_aliases]), sorted(_marks), sorted(unfound))
    return _claimable


def not_found(name: str) -> None:
    """Note that no finder of this process finds a function for rows named ``name``."""
    global _claimable
    unfound.add(name)
    _claimable = None
