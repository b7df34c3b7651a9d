from django.contrib import admin
from django.urls import include, path

from cq.web.metrics import metrics

urlpatterns = [path("admin/", admin.site.urls), path("cq/", include("cq.urls")), path("metrics", metrics)]
