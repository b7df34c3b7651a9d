"""System checks: configuration mistakes reported at startup, not at the first task."""

from __future__ import annotations

import importlib.util
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils.module_loading import import_string

from . import registry, retention
from .conf import settings


@checks.register()
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    config = getattr(django_settings, "CHANNEL_LAYERS", {}).get(settings.CHANNEL_LAYER)
    if config is None:
        return []
    if config.get("BACKEND", "").endswith("InMemoryChannelLayer"):
        return [checks.Warning(
            f"CHANNEL_LAYERS[{settings.CHANNEL_LAYER!r}] is an InMemoryChannelLayer: a cq_runworker process "
            f"cannot hear doorbells rung by another process, and picks tasks up from the database only "
            f"after CQ_QUEUED_GRACE seconds.",
            hint="Use cq.layers.RedisChannelLayer for the cq layer outside tests.", id="cq.W001")]
    return []


@checks.register()
def check_sqlite_locking(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    db = connections["default"]
    if db.vendor != "sqlite" or db.settings_dict.get("OPTIONS", {}).get("transaction_mode") == "IMMEDIATE":
        return []
    return [checks.Warning(
        "SQLite is used without transaction_mode IMMEDIATE: a worker and a web process writing at the same "
        "time can fail with 'database is locked'.",
        hint='Add "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20} to DATABASES["default"].',
        id="cq.W002")]


@checks.register()
def check_callables(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """CQ_NOTIFIERS and CQ_TASK_ACCESS name callables that can be imported."""
    named = [("CQ_NOTIFIERS", path) for path in settings.NOTIFIERS]
    if settings.TASK_ACCESS:
        named.append(("CQ_TASK_ACCESS", settings.TASK_ACCESS))
    errors: list[checks.CheckMessage] = []
    for setting, path in named:
        try:
            found = import_string(path)
        except ImportError as error:
            errors.append(checks.Error(f"{setting} names {path!r}, which cannot be imported: {error}",
                                       id="cq.E001"))
            continue
        if not callable(found):
            errors.append(checks.Error(f"{setting} names {path!r}, which is not callable.", id="cq.E001"))
    return errors


@checks.register()
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """CQ_METRICS_TOKEN is set for the metrics view, which needs prometheus-client."""
    if not settings.METRICS_TOKEN or importlib.util.find_spec("prometheus_client") is not None:
        return []
    return [checks.Error("CQ_METRICS_TOKEN is set, but cq's metrics need the prometheus-client package, "
                         "which is not installed.", hint="pip install 'cq[prometheus]'", id="cq.E003")]


@checks.register()
def check_retention(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """CQ_RETENTION's rules are rules; a function one names is registered (a typo keeps nothing)."""
    try:
        rules = retention.rules()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="cq.E004")]
    return [checks.Warning(f"CQ_RETENTION[{index}] names {name!r}, which is not a registered task function.",
                           hint="Check its spelling, or that the module defining it is imported.", id="cq.W003")
            for index, rule in enumerate(rules) for name in sorted(rule.functions or ()) if registry.find(name) is None]
