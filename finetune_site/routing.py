"""Websocket routes (filled by the live UI)."""

websocket_urlpatterns: list = []
