"""The metrics for Prometheus, at a URL the project mounts::

    from cq.web.metrics import metrics
    urlpatterns = [path("cq/metrics", metrics)]

It answers a logged-in staff user, or a request carrying ``Authorization: Bearer <token>`` with
the token of ``CQ_METRICS_TOKEN`` (compared in constant time); anyone else gets 401 (403 for a
user who is logged in but not staff). Each scrape first counts the tasks finished since the last
count (``cq.metrics.tally.advance``), then reads the gauges (``cq.engine.queues.overview``). It
needs ``prometheus-client`` (``pip install 'cq[prometheus]'``): without it, importing this module,
as mounting the view does, raises ``ImproperlyConfigured``.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from ..conf import settings
from ..engine import queues
from ..metrics import exposition, tally
from ..operating import Tally


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The exposition of cq's metrics, to staff and to holders of ``CQ_METRICS_TOKEN``."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    tally.advance(start=True)
    body = exposition.render(list(Tally.objects.order_by("func_name", "status")), queues.overview(),
                             tally.counted_to())
    return HttpResponse(body, content_type=exposition.CONTENT_TYPE_LATEST)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """``None`` if the request may read the metrics, else the response that says why not."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        if _token_matches(given.strip()):
            return None
        return _unauthorized("The bearer token is not CQ_METRICS_TOKEN.")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user.is_staff:
            return None
        return HttpResponse("Only staff may read cq's metrics.\n", status=403, content_type="text/plain")
    return _unauthorized("Log in as staff, or send Authorization: Bearer <CQ_METRICS_TOKEN>.")


def _token_matches(given: str) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return False
    return hmac.compare_digest(given.encode(), str(token).encode())


def _unauthorized(why: str) -> HttpResponse:
    response = HttpResponse(why + "\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="cq metrics"'
    return response
