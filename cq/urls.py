"""cq's URLs: ``path("cq/", include("cq.urls"))``."""

from django.urls import path

from . import api

app_name = "cq"
urlpatterns = [
    path("api/tasks/", api.tasks, name="api-tasks"),
    path("api/tasks/<str:task_id>/", api.task, name="api-task"),
    path("api/tasks/<str:task_id>/revoke/", api.revoke, name="api-revoke"),
    path("api/tasks/<str:task_id>/retry/", api.retry, name="api-retry"),
    path("api/tasks/<str:task_id>/rerun/", api.rerun, name="api-rerun"),
]
