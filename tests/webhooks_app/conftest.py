import pytest

from tests.webhooks_app.receiver import Receiver


@pytest.fixture
def private_allowed(settings):
    """The receivers listen on 127.0.0.1: the operator's switch for private addresses is on."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    return settings


@pytest.fixture
def receiver():
    started = Receiver()
    yield started
    started.stop()
