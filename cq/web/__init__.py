"""cq's web face: the JSON API, the dashboard and the websocket of live events.

- ``api``: the JSON API (list, read, create, revoke, retry, re-run tasks).
- ``dashboard``: the staff pages (task list, a task's page, workers, queues), rendered from
  ``cq/templates/cq/`` with ``cq/static/cq/``.
- ``fleet``: what the workers and queues pages show (a worker's pace, running task and memory; a
  queue's charts of its last hour), and ``GET api/workers/``.
- ``bulk``: retrying or revoking every task a list's filters match, counted first, in batches
  (the API's and the dashboard's).
- ``consumers``: the websocket consumer that streams live events (``cq.transport.events``).
- ``access``: who may see a task.

Their public routes are ``cq.urls`` (``path("cq/", include("cq.urls"))``) and ``cq.routing``
(``websocket_urlpatterns``), which stay at cq's top level.
"""
