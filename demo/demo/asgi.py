"""The demo's ASGI application: Django's pages (and static files, as runserver would serve them)
plus cq's websocket of live task events, for daphne: ``daphne demo.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
django_application = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from cq.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    # A production site serves static files with its web server or WhiteNoise instead.
    "http": ASGIStaticFilesHandler(django_application),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
