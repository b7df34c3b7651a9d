"""Settings for `make bench`: PostgreSQL (database cq_bench, created by the benchmark), Redis
database 8 under the prefix "cqbench". Override with BENCH_PG_* and BENCH_REDIS_URL."""

import os

SECRET_KEY = "cq-bench-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "cq", "bench.benchapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
        "PORT": int(os.environ.get("BENCH_PG_PORT", "5432")),
        "USER": os.environ.get("BENCH_PG_USER", "postgres"),
        "NAME": os.environ.get("BENCH_PG_NAME", "cq_bench"),
        # Workers and producers keep their connection: a new one costs 7-10 ms here.
        "CONN_MAX_AGE": None,
    }
}
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
CHANNEL_LAYERS = {
    "cq": {
        "BACKEND": "cq.layers.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "prefix": "cqbench"},
    },
}
CQ_SCHEDULER = False
# Django's Tasks framework on cq, for the enqueue() figures.
TASKS = {"default": {"BACKEND": "cq.backends.CQBackend"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["console"], "level": "WARNING"}}
