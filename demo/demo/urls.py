from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("cq/", include("cq.urls")),
    path("", include("invoices.urls")),
]
