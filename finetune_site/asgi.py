"""ASGI entry point (served by uvicorn, see finetune_site/server.py): HTTP through Django,
websockets through Channels, both behind the checks of finetune_site/front_door.py."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_site.settings")
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from finetune_site.front_door import (  # noqa: E402
    BodyLimits,
    SpoolingASGIHandler,
    WebsocketApiKeyAuth,
    WebsocketNulRefusal,
    WebsocketOriginCheck,
)
from finetune_site.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodyLimits(SpoolingASGIHandler()),
        "websocket": WebsocketOriginCheck(WebsocketNulRefusal(
            AuthMiddlewareStack(WebsocketApiKeyAuth(URLRouter(websocket_urlpatterns))))),
    }
)
