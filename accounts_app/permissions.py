"""The API's rule for a project's viewers: they read, and any write is a 403 ``project_role``."""

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts_app.selectors import WRITERS, project_acting, project_role


class ProjectRole(BasePermission):
    """Unsafe methods need the owner or member role in the acting project, unless the view says a viewer
    may (``viewer_allowed = True``: chat with a model, manage one's own projects)."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS or getattr(view, "viewer_allowed", False):
            return True
        if not request.user or not request.user.is_authenticated:
            return True  # IsAuthenticated answers
        role = project_role(request.user)
        if role in WRITERS:
            return True
        raise exceptions.PermissionDenied(
            f"You are a {role} of project {project_acting(request.user).id}: viewers can read its objects but "
            "not change them. Ask an owner of the project for the member role.", code="project_role")
