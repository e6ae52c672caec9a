"""Reads of projects: which project a request acts in, with which role, and who belongs where.

A request acts in one project: an API key's own, or for a browser session the one chosen in the
navigation (the personal project by default). Authentication sets it on the user
(``user_acting``); every other read asks ``project_acting(user)`` and ``project_role(user)``.
"""

from django.db.models import F, OuterRef, QuerySet, Subquery
from django.http import Http404

from accounts_app.models import Membership, Project
from finetune_site.errors import Forbidden

Role = Membership.Role
WRITERS = (Role.OWNER, Role.MEMBER)


def project_personal(user) -> Project:
    """``user``'s personal project: made with the user (``services.project_personal_ensure``; accounts_app
    0004 made one for each user from before projects), never here."""
    return Project.objects.get(personal_user=user)


def project_acting(user) -> Project:
    """The project ``user``'s request acts in: set by authentication, else their personal project (tasks,
    management commands, tests calling services directly)."""
    acting = getattr(user, "acting_project", None)
    return acting if acting is not None else project_personal(user)


def project_role(user) -> str:
    """``user``'s role in the project they act in."""
    role = getattr(user, "acting_role", None)
    if role is not None:
        return role
    membership = Membership.objects.filter(project=project_acting(user), user=user).first()
    return membership.role if membership else Role.VIEWER


def user_acting(user, project_id: str | None = None):
    """``user`` acting in the project ``project_id`` (their personal one when None or when they are not a
    member of it); returns the user, with ``acting_project`` and ``acting_role`` set."""
    membership = None
    if project_id:
        membership = Membership.objects.select_related("project").filter(project_id=project_id, user=user).first()
    if membership is None:
        project = project_personal(user)
        membership = Membership.objects.filter(project=project, user=user).first()
        user.acting_project, user.acting_role = project, membership.role if membership else Role.OWNER
    else:
        user.acting_project, user.acting_role = membership.project, membership.role
    return user


def user_in_project(user, project: Project):
    """``user`` acting in ``project`` with their role there: for background work done on behalf of an
    object's creator (a sweep's trials, a pipeline's steps) in the object's project. ``Forbidden``
    (``project_membership``) once they no longer belong to it or only view it: their work stops acting
    there."""
    role = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    if role not in WRITERS:
        standing = "is only a viewer of" if role else "no longer belongs to"
        raise Forbidden(f"{user.get_username()} {standing} project {project.name} ({project.id}): work they "
                        "started there does not act in it any more", code="project_membership")
    user.acting_project, user.acting_role = project, role
    return user


def projects_of(user) -> QuerySet[Project]:
    """The projects ``user`` is a member of, their personal one first, each with ``user``'s ``role`` in it."""
    role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    return (Project.objects.filter(memberships__user=user).annotate(role=Subquery(role))
            .order_by(F("personal_user_id").asc(nulls_last=True), "name", "id"))


def project_get(user, project_id: str) -> Project:
    """The project ``project_id`` with ``user``'s ``role`` in it; a 404 unless ``user`` is a member (another
    project does not exist for them)."""
    project = projects_of(user).filter(pk=project_id).first()
    if project is None:
        raise Http404(f"No such project: {project_id}")
    return project


def members_of(project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user")
