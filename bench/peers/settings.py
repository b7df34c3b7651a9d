"""Django settings of the celery-db peer, and the PostgreSQL database cq_peers that it and
procrastinate use (dropped and created by bench/peers/run.py). Override with BENCH_PG_*."""

import os

PG = {
    "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
    "user": os.environ.get("BENCH_PG_USER", "postgres"),
    "dbname": "cq_peers",
}
SECRET_KEY = "cq-bench-peers-only"
USE_TZ = True
INSTALLED_APPS = ["django_celery_results"]
# CONN_MAX_AGE is left at Django's default, 0; it would not matter anyway: Celery's Django fixup
# closes the connection before and after every task, so each task opens one (about 5 ms here).
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": PG["host"], "PORT": PG["port"],
                         "USER": PG["user"], "NAME": PG["dbname"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
