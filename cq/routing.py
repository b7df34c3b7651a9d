"""Websocket routes of cq, for a project's ASGI application:

    from cq.routing import websocket_urlpatterns
    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    })
"""

from django.urls import path

from .web.consumers import TaskEventsConsumer

websocket_urlpatterns = [
    path("ws/cq/tasks/", TaskEventsConsumer.as_asgi()),
    path("ws/cq/tasks/<str:task_id>/", TaskEventsConsumer.as_asgi()),
]
