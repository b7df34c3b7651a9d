"""cq's URLs: ``path("cq/", include("cq.urls"))``: the dashboard and the JSON API."""

from django.urls import path

from .web import api, bulk, dashboard, fleet, queue_api

app_name = "cq"
urlpatterns = [
    path("", dashboard.task_list, name="dashboard"),
    path("tasks/<str:task_id>/", dashboard.task_page, name="task"),
    path("workers/", dashboard.workers, name="workers"),
    path("queues/", dashboard.queues, name="queues"),
    path("bulk/<str:action>/", bulk.confirm, name="bulk"),
    path("api/tasks/", api.tasks, name="api-tasks"),
    path("api/tasks/<str:task_id>/", api.task, name="api-task"),
    path("api/tasks/<str:task_id>/revoke/", api.revoke, name="api-revoke"),
    path("api/tasks/<str:task_id>/retry/", api.retry, name="api-retry"),
    path("api/tasks/<str:task_id>/retry-failed/", api.retry_failed, name="api-retry-failed"),
    path("api/tasks/<str:task_id>/rerun/", api.rerun, name="api-rerun"),
    path("api/queues/", queue_api.queue_list, name="api-queues"),
    path("api/queues/<str:name>/", queue_api.queue, name="api-queue"),
    path("api/bulk/<str:action>/", bulk.api, name="api-bulk"),
    path("api/workers/", fleet.worker_list, name="api-workers"),
]
