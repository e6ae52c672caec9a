import pytest

from tests.api import lockouts_forget


@pytest.fixture(autouse=True)
def _no_lockouts():
    """Every test client comes from 127.0.0.1: one test's failed logins or bad keys must not lock out
    the next test's."""
    lockouts_forget()
    yield
    lockouts_forget()
