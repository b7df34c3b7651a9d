"""The URLs of `make bench`'s task-list phase (bench/settings_list.py)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls), path("cq/", include("cq.urls"))]
