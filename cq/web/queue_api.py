"""The JSON API of queue controls (``path("cq/", include("cq.urls"))``), in the shape of ``cq.web.api``:

- ``GET api/queues/``: every queue with controls, waiting tasks or a live worker, each with its
  minute samples of the last hour (``cq.scheduling.sampling``) (staff).
- ``POST api/queues/<name>/`` with ``{"paused": true|false, "concurrency": n|null}`` (either or
  both): change them, for staff with the ``cq.change_queue`` permission. The change is logged and
  sent on the websocket with the user's name (``cq.engine.queues``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from ..engine import queues
from ..scheduling import sampling
from .access import may_control_queues
from .api import Refused, endpoint, read_body

CONTROLS = ("paused", "concurrency")


@endpoint("GET")
def queue_list(request: HttpRequest) -> dict[str, Any]:
    if not request.user.is_staff:
        raise Refused(403, "forbidden", "Listing queues takes staff.")
    history = sampling.history()
    return {"queues": [{**state.as_json(), "last_hour": history.of(name)}
                       for name, state in queues.overview().queues.items()]}


@endpoint("POST", created=False)
def queue(request: HttpRequest, name: str) -> dict[str, Any]:
    if not may_control_queues(request.user):
        raise Refused(403, "forbidden", "Changing a queue takes staff with the permission to change queues.")
    body = read_body(request)
    unknown = sorted(set(body) - set(CONTROLS))
    if unknown or not body:
        also = f"; not {', '.join(unknown)}" if unknown else ""
        raise Refused(400, "invalid", f"Give paused, concurrency or both{also}.")
    row = queues.change(name, by=request.user.get_username(), **body)
    return {"queue": queues.as_json(row)}
