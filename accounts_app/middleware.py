"""The project a browser session acts in, and the viewer's read-only rule for the pages' forms."""

from django.contrib import messages
from django.http import HttpResponseForbidden

from accounts_app.models import Project
from accounts_app.selectors import WRITERS, user_acting

SESSION_KEY = "project_id"
# Page posts a viewer may make: choosing a project, leaving, logging out. The API has its own rule
# (accounts_app.permissions.ProjectRole), and the admin its staff permissions.
VIEWER_POSTS = ("/accounts/", "/v1/", "/admin/")


class ActingProjectMiddleware:
    """Sets ``request.user.acting_project``/``acting_role`` from the session's choice (personal by default)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            chosen = request.session.get(SESSION_KEY)
            user_acting(user, chosen)
            if chosen and user.acting_project.id != chosen:
                _choice_lost(request, chosen)
            if (request.method not in ("GET", "HEAD", "OPTIONS") and user.acting_role not in WRITERS
                    and not request.path.startswith(VIEWER_POSTS)):
                return HttpResponseForbidden(f"You are a viewer of project {user.acting_project.name}: "
                                             "viewers cannot change its objects.")
        return self.get_response(request)


def _choice_lost(request, chosen: str) -> None:
    """The project the session chose is no longer the user's (removed, left elsewhere, deleted): say so
    once, on this page, rather than act in the personal project silently."""
    name = Project.objects.filter(pk=chosen).values_list("name", flat=True).first()
    request.session.pop(SESSION_KEY)
    messages.warning(request, f"You no longer belong to project {name or chosen}: you act in your personal "
                              f"project {request.user.acting_project.name} now.")
