"""Websocket routes."""

from django.urls import path

from jobs_app.consumers import JobConsumer

websocket_urlpatterns = [
    path("ws/jobs/<str:job_id>/", JobConsumer.as_asgi()),
]
