"""Writes for a user's account: projects and their members, API keys (hashed, several per user, each
acting in one project) and failed-login lockouts."""

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts_app.models import KEY_PREFIX, ApiKey, Membership, Project
from accounts_app.selectors import project_acting
from finetune_site.errors import Forbidden, InvalidRequest, NotFound

Role = Membership.Role
PROJECT_NAME_MAX = Project._meta.get_field("name").max_length

NAME_MAX = ApiKey._meta.get_field("name").max_length
PREFIX_SHOWN = len(KEY_PREFIX) + 6


class ApiKeyRefused(Exception):
    """The presented key does not let anyone in; the message says why, without naming any user."""

    def __init__(self, message: str, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.code = code


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


# --- projects ----------------------------------------------------------------------------------------

def project_personal_ensure(user) -> Project:
    """``user``'s personal project, made (with ``user`` as its owner) if it does not exist yet."""
    with transaction.atomic():
        project, made = Project.objects.get_or_create(personal_user=user, defaults={"name": user.get_username()})
        if made:
            Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.OWNER})
    return project


def project_create(*, user, name: str) -> Project:
    """A new shared project named ``name`` with ``user`` as its owner."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("name the project, e.g. after the team", param="name")
    if len(name) > PROJECT_NAME_MAX:
        raise InvalidRequest(f"the name is {len(name)} characters; at most {PROJECT_NAME_MAX}", param="name")
    with transaction.atomic():
        project = Project.objects.create(name=name)
        Membership.objects.create(project=project, user=user, role=Role.OWNER)
    return project


def project_manage_check(*, project: Project, by) -> None:
    """Raise a 403 (``project_role``) unless ``by`` owns ``project``."""
    if not Membership.objects.filter(project=project, user=by, role=Role.OWNER).exists():
        raise Forbidden(f"Only an owner of project {project.id} manages its members and keys.", code="project_role")


def member_add(*, project: Project, by, user: str, role: str = Role.MEMBER) -> Membership:
    """Add the user named ``user`` (a username or an email) to ``project`` with ``role``, or change the
    role of a member; ``by`` must own the project. A personal project has one member."""
    project_manage_check(project=project, by=by)
    if role not in Role.values:
        raise InvalidRequest(f"role must be one of {', '.join(Role.values)}, not {role!r}", param="role")
    if project.personal:
        raise InvalidRequest("a personal project has no other members: create a project for the team",
                             param="user")
    found = _user_named(user)
    with transaction.atomic():
        _members_lock(project)
        membership, _ = Membership.objects.update_or_create(project=project, user=found, defaults={"role": role})
        _owner_kept(project)
    return membership


def member_remove(*, project: Project, by, user_id: int) -> None:
    """Remove a member from ``project`` (an owner's act, or a member leaving); the last owner stays.
    The member's API keys for the project are revoked."""
    if project.personal:
        raise InvalidRequest("a personal project is its user's own: nobody leaves it or is removed from it",
                             param="user_id")
    if user_id != by.pk:
        project_manage_check(project=project, by=by)
    with transaction.atomic():
        _members_lock(project)
        deleted, _ = Membership.objects.filter(project=project, user_id=user_id).delete()
        if not deleted:
            raise NotFound(f"No such member of {project.id}: {user_id}", param="user_id", code="not_found")
        _owner_kept(project)
        api_keys_revoke(keys=ApiKey.objects.filter(project=project, user_id=user_id))


def _user_named(name: str):
    from django.contrib.auth import get_user_model

    name = (name or "").strip()
    users = get_user_model().objects.filter(is_active=True)
    found = users.filter(username=name).first() or (users.filter(email__iexact=name).first() if "@" in name else None)
    if found is None:
        raise InvalidRequest(f"No user named {name!r}: give a username or an email of a user of this platform",
                             param="user")
    return found


def _members_lock(project: Project) -> None:
    """One change of ``project``'s members at a time: two owners demoting each other at once would
    each see the other still an owner, and leave none."""
    Project.objects.select_for_update().filter(pk=project.pk).first()


def _owner_kept(project: Project) -> None:
    if not Membership.objects.filter(project=project, role=Role.OWNER).exists():
        raise InvalidRequest("a project keeps at least one owner: make another member an owner first",
                             param="role")


# --- API keys ----------------------------------------------------------------------------------------

def api_key_create(*, user, name: str, expires_at: datetime | None = None,
                   project: Project | None = None) -> tuple[ApiKey, str]:
    """A new key for ``user`` acting in ``project`` (default: the project ``user`` acts in now): the row
    (hash and prefix only) and the key, which is never stored."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("name the key after where it is used, e.g. laptop or ci", param="name")
    if len(name) > NAME_MAX:
        raise InvalidRequest(f"the name is {len(name)} characters; at most {NAME_MAX}", param="name")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest("the expiry must be in the future", param="expires_at")
    project = project or project_acting(user)
    if not Membership.objects.filter(project=project, user=user).exists():
        raise NotFound(f"No such project: {project.id}", param="project", code="not_found")
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(user=user, project=project, name=name, prefix=raw_key[:PREFIX_SHOWN],
                                    key_hash=api_key_hash(raw_key), expires_at=expires_at)
    return api_key, raw_key


def api_key_replace(*, user, name: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key named ``name``, revoking the user's other active keys of that name (the CLI's way)."""
    with transaction.atomic():
        api_key, raw_key = api_key_create(user=user, name=name, expires_at=expires_at)
        api_keys_revoke(keys=ApiKey.objects.filter(user=user, name=api_key.name).exclude(pk=api_key.pk))
    return api_key, raw_key


def api_key_revoke(*, user, key_id: int) -> ApiKey:
    """Revoke one of ``user``'s keys; requests with it get a 401 from now on. Revoking twice is harmless."""
    api_key = ApiKey.objects.filter(user=user, pk=key_id).first()
    if api_key is None:
        raise NotFound(f"No such API key: {key_id}", param="key_id", code="not_found")
    api_keys_revoke(keys=ApiKey.objects.filter(pk=api_key.pk))
    api_key.refresh_from_db()
    return api_key


def api_keys_revoke(*, keys) -> int:
    """Revoke every key of the queryset ``keys`` not revoked yet; returns how many were."""
    return keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_key_authenticate(*, raw_key: str) -> ApiKey:
    """The active key ``raw_key`` names, with its user; raises ``ApiKeyRefused`` saying why not.

    ``last_used_at`` is written at most once per ``API_KEY_LAST_USED_SECONDS``, by one conditional
    UPDATE, so a busy key does not write on every request.
    """
    api_key = ApiKey.objects.select_related("user", "project").filter(key_hash=api_key_hash(raw_key)).first()
    if api_key is None:
        raise ApiKeyRefused(f"Incorrect API key provided: {_shown(raw_key)}. Create one on the API keys page.")
    if api_key.revoked_at:
        raise ApiKeyRefused(f"The API key {api_key.prefix}… was revoked.", code="api_key_revoked")
    now = timezone.now()
    if api_key.expires_at and api_key.expires_at <= now:
        raise ApiKeyRefused(f"The API key {api_key.prefix}… expired at {api_key.expires_at:%Y-%m-%d %H:%M} UTC.",
                            code="api_key_expired")
    if not api_key.user.is_active:
        raise ApiKeyRefused("The API key's user is deactivated.", code="user_inactive")
    if api_key.project_id and not Membership.objects.filter(project_id=api_key.project_id, user=api_key.user).exists():
        raise ApiKeyRefused(f"The API key {api_key.prefix}… is for project {api_key.project_id}, which its user "
                            "no longer belongs to.", code="project_membership")
    stale = now - timedelta(seconds=settings.API_KEY_LAST_USED_SECONDS)
    if api_key.last_used_at is None or api_key.last_used_at < stale:
        # Conditional: of several requests racing past the check above, one writes.
        ApiKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk=api_key.pk).update(
            last_used_at=now)
        api_key.last_used_at = now
    return api_key


def _shown(raw_key: str) -> str:
    """Enough of a wrong key to recognise it in a log, as OpenAI shows it: ``sk-ft-ab****wxyz``."""
    if len(raw_key) < 16:
        return "****"
    return f"{raw_key[:8]}****{raw_key[-4:]}"


# --- lockouts: a count of failures per subject in the cache, then a wait ---------------------------

def strikes_lockout(*, scope: str, subject: str) -> int:
    """Seconds ``subject`` must still wait after too many failures in ``scope`` (0: it may try)."""
    until = cache.get(_strike_key("lock", scope, subject))
    return max(0, int(until - timezone.now().timestamp()) + 1) if until else 0


def strike_record(*, scope: str, subject: str, allowed: int) -> int:
    """Count one failure; the ``allowed``-th within ``LOGIN_LOCKOUT_SECONDS`` locks ``subject`` out.

    Returns the seconds of the lockout it started, else 0.
    """
    window = settings.LOGIN_LOCKOUT_SECONDS
    key = _strike_key("count", scope, subject)
    cache.add(key, 0, window)  # the window starts at the first failure
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, window)
        failures = 1
    if failures < allowed:
        return 0
    cache.set(_strike_key("lock", scope, subject), timezone.now().timestamp() + window, window)
    cache.delete(key)
    return window


def strikes_clear(*, scope: str, subject: str) -> None:
    cache.delete_many([_strike_key("count", scope, subject), _strike_key("lock", scope, subject)])


def _strike_key(kind: str, scope: str, subject: str) -> str:
    # Hashed: a username may hold characters a cache key may not.
    return f"strikes:{kind}:{scope}:{hashlib.sha256(subject.encode()).hexdigest()}"


def login_subject(username: str, ip: str) -> str:
    return f"{username.strip().lower()}|{ip}"
