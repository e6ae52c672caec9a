"""Projects and their members, and API keys: stored as a sha256 of the key, never the key itself (it is
shown once, at creation)."""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "sk-ft-"


def project_id_new() -> str:
    return "proj_" + secrets.token_hex(12)


class Project(models.Model):
    """What datasets, jobs, models, keys and quotas belong to (OpenAI's organisation/project). Every user
    has a personal one; others are shared by their members."""

    id = models.CharField(primary_key=True, max_length=40, default=project_id_new, editable=False)
    name = models.CharField(max_length=100)
    # Set on a user's personal project only: the one their objects go to unless they act in another.
    personal_user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                                         related_name="personal_project")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def personal(self) -> bool:
        return self.personal_user_id is not None


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"  # reads, writes and manages members
        MEMBER = "member", "Member"  # reads and writes
        VIEWER = "viewer", "Viewer"  # reads only

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project_id} ({self.role})"


class ApiKey(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    # The project a request with the key acts in; None: the user's personal project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The key's first characters, enough to tell keys apart in a list; the rest is never stored.
    prefix = models.CharField(max_length=16)
    # sha256 of the whole key. A fast hash is enough: the key carries 256 random bits, so there is no
    # dictionary to try, and a unique index finds it in one lookup.
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return self.Status.REVOKED
        if self.expires_at and self.expires_at <= timezone.now():
            return self.Status.EXPIRED
        return self.Status.ACTIVE
