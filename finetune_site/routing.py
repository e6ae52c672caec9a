"""Websocket routes."""

from channels.security.websocket import WebsocketDenier
from django.urls import path, re_path

from datasets_app.consumers import DatasetConsumer
from finetune_site.consumers import DashboardConsumer
from jobs_app.consumers import JobConsumer
from models_app.consumers import PlaygroundConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/jobs/<str:job_id>/", JobConsumer.as_asgi()),
    path("ws/datasets/<str:dataset_id>/", DatasetConsumer.as_asgi()),
    path("ws/playground/", PlaygroundConsumer.as_asgi()),
    # Any other path: the handshake is refused, instead of the router raising "No route found".
    re_path(r"", WebsocketDenier.as_asgi()),
]
