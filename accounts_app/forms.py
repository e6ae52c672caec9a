"""The login forms (web and admin) with a lockout after repeated failures, and the new-key form."""

import math
from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts_app import services
from accounts_app.services import NAME_MAX


class LockoutMixin:
    """After ``LOGIN_FAILURES_ALLOWED`` wrong passwords for one username from one address, that
    pair is refused for ``LOGIN_LOCKOUT_SECONDS``, even with the right password."""

    locked_seconds = 0

    def clean(self):
        subject = services.login_subject(self.cleaned_data.get("username") or "",
                                         self.request.META.get("REMOTE_ADDR", "") if self.request else "")
        wait = services.strikes_lockout(scope="login", subject=subject)
        if wait:
            raise self._locked(wait)
        try:
            cleaned = super().clean()
        except ValidationError as error:
            if error.code == "invalid_login":
                wait = services.strike_record(scope="login", subject=subject,
                                              allowed=settings.LOGIN_FAILURES_ALLOWED)
                if wait:
                    raise self._locked(wait) from None
            raise
        services.strikes_clear(scope="login", subject=subject)
        return cleaned

    def _locked(self, wait: int) -> ValidationError:
        self.locked_seconds = wait
        minutes = math.ceil(wait / 60)
        return ValidationError(
            f"Too many failed logins for this username from your address. Logging in is blocked for "
            f"{minutes} minute{'s' if minutes != 1 else ''}; try again after that.", code="locked")


class LoginForm(LockoutMixin, AuthenticationForm):
    pass


class AdminLoginForm(LockoutMixin, AdminAuthenticationForm):
    pass


EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"),
                  ("365", "In a year")]


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, help_text="Where the key is used, e.g. laptop or ci.")
    expires_in_days = forms.TypedChoiceField(label="Expires", choices=EXPIRY_CHOICES, coerce=int,
                                             empty_value=None, required=False)

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None
