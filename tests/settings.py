"""Settings for cq's own test suite.

``CQ_TEST_DATABASE`` picks the database: ``sqlite`` (a file, so worker
processes share it) or ``postgres`` (127.0.0.1:5432, user postgres). Redis is
127.0.0.1:6379 database 7, keys under the ``cqtest`` prefix. A worker started
by a test gets the test database's name in ``CQ_TEST_DB_NAME``. Two suites can
run at once with their own ``CQ_TEST_PG_TEST_NAME`` and ``CQ_TEST_REDIS_URL``.
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "cq-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]  # the browser tests serve the site with daphne

DATABASE = os.environ.get("CQ_TEST_DATABASE", "sqlite")
WORKER_DB_NAME = os.environ.get("CQ_TEST_DB_NAME")
if DATABASE == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("CQ_TEST_PG_HOST", "127.0.0.1"),
            "PORT": int(os.environ.get("CQ_TEST_PG_PORT", "5432")),
            "USER": os.environ.get("CQ_TEST_PG_USER", "postgres"),
            "NAME": WORKER_DB_NAME or "test",
            "CONN_MAX_AGE": 60,
            "TEST": {"NAME": os.environ.get("CQ_TEST_PG_TEST_NAME", "test_cq")},
        }
    }
elif DATABASE == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": WORKER_DB_NAME or str(BASE_DIR / ".db.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL"},
            "TEST": {"NAME": str(BASE_DIR / ".test-db.sqlite3")},
        }
    }
else:
    raise RuntimeError(f"CQ_TEST_DATABASE must be sqlite or postgres, not {DATABASE!r}")

REDIS_URL = os.environ.get("CQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
CHANNEL_LAYERS = {
    "cq": {
        "BACKEND": "cq.layers.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "prefix": "cqtest"},
    },
}
CQ_RETRY_BACKOFF = 0
# Django's Tasks framework on cq (tests/unit/test_backends.py, tests/integration/test_backends.py).
TASKS = {"default": {"BACKEND": "cq.backends.CQBackend", "QUEUES": ["default", "reports"]}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "cq",
    "tests.testapp",
]
STATIC_URL = "static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CQ_TEST_LOG_LEVEL", "WARNING")},
}

# A test that starts worker processes can hand them extra settings as JSON.
for _name, _value in json.loads(os.environ.get("CQ_TEST_SETTINGS_JSON", "{}")).items():
    globals()[_name] = _value
