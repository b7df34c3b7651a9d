"""Settings for `make bench`'s task-list phase (bench/listing.py): the tuned settings, on a
database of its own (cq_bench_list, created and dropped by the phase), with what the dashboard's
pages need to render (templates, the admin's URLs, sessions)."""

import os

from bench.settings import *  # noqa: F403
from bench.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ.get("BENCH_LIST_PG_NAME", "cq_bench_list")
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages", "cq", "bench.benchapp"]
ROOT_URLCONF = "bench.urls"
STATIC_URL = "static/"
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                 "django.contrib.auth.context_processors.auth",
                                                 "django.contrib.messages.context_processors.messages"]}}]
