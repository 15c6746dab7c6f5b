from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/runs/<int:pk>/", consumers.RunLogConsumer.as_asgi()),
]
