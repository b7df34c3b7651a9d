"""Settings of the demo site: SQLite unless DATABASE_URL names a PostgreSQL database; Redis at
REDIS_URL (127.0.0.1:6379 by default)."""

import os
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SECRET_KEY", "demo-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "cq",
    "invoices",
]
ASGI_APPLICATION = "demo.asgi.application"
LOGIN_URL = "admin:login"
MEDIA_ROOT = Path(os.environ.get("DEMO_MEDIA_ROOT", BASE_DIR / "media"))
# The office's email and the customers' reminders are written to files, to read them.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = MEDIA_ROOT / "outbox"
# Seconds a rendering takes at least (to watch the job), and until the payment reminder.
DEMO_RENDER_PACE = float(os.environ.get("DEMO_RENDER_PACE", "0.4"))
DEMO_REMINDER_AFTER = int(os.environ.get("DEMO_REMINDER_AFTER", "60"))


def _database(url: str | None) -> dict:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DEMO_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # A worker and the web process write at once: take the write lock up front.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL"},
        }
    parts = urlparse(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": parts.port or "",
        "CONN_MAX_AGE": 60,
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# The cq layer carries doorbells only: long expiry, room for a backlog, and no
# socket timeout (redis-py 8's 5 s default cuts blocking reads). "default" carries
# the live events the pages follow over their websocket.
CHANNEL_LAYERS = {
    "cq": {
        "BACKEND": "cq.layers.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "prefix": "cqdemo"},
    },
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "cqdemo-events"},
    },
}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"cq.worker": {"level": "INFO"}},
}
