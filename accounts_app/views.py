from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts_app import selectors, services
from accounts_app.forms import ApiKeyCreateForm, LoginForm
from accounts_app.middleware import SESSION_KEY
from accounts_app.models import ApiKey, Membership
from finetune_site.errors import InvalidRequest, NotFound


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    template_name = "accounts_app/login.html"

    def form_valid(self, form):
        # a user made without signals (a fixture, bulk_create) gets the personal project here, on a
        # POST: reading it (every page) never makes it
        services.project_personal_ensure(form.get_user())
        return super().form_valid(form)

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.locked_seconds:
            response.status_code = 429
            response["Retry-After"] = str(form.locked_seconds)
        return response


def _tokens_page(request, *, form=None, new_key: str = "", status: int = 200):
    keys = ApiKey.objects.filter(user=request.user).select_related("project")
    return render(request, "accounts_app/tokens.html", {"keys": keys, "form": form or ApiKeyCreateForm(),
                                                        "new_key": new_key}, status=status)


@login_required
def tokens(request):
    return _tokens_page(request)


@never_cache  # the one response that carries the key must not be kept by any cache
@require_POST
@login_required
def token_create(request):
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form=form, status=400)
    try:
        _, raw_key = services.api_key_create(user=request.user, name=form.cleaned_data["name"],
                                             expires_at=form.expires_at())
    except InvalidRequest as error:
        form.add_error(None, error.message)
        return _tokens_page(request, form=form, status=400)
    # Shown in this response only: it is stored nowhere, not even in the session.
    return _tokens_page(request, new_key=raw_key, status=201)


@require_POST
@login_required
def token_revoke(request, key_id: int):
    try:
        services.api_key_revoke(user=request.user, key_id=key_id)
    except NotFound:
        raise Http404("No such API key") from None  # another user's key looks the same as none
    return redirect("accounts:tokens")


def _projects_page(request, *, error: str = "", status: int = 200):
    project = request.user.acting_project
    return render(request, "accounts_app/projects.html", {
        "memberships": Membership.objects.filter(user=request.user).select_related("project"),
        "members": selectors.members_of(project), "project": project, "error": error,
        "is_owner": request.user.acting_role == Membership.Role.OWNER, "roles": Membership.Role.choices},
        status=status)


@login_required
def projects(request):
    return _projects_page(request)


@require_POST
@login_required
def project_switch(request):
    """Act in another of one's projects from now on (this browser session)."""
    project = selectors.project_get(request.user, request.POST.get("project", ""))
    request.session[SESSION_KEY] = project.id
    return redirect("accounts:projects")


@require_POST
@login_required
def project_create(request):
    try:
        project = services.project_create(user=request.user, name=request.POST.get("name", ""))
    except InvalidRequest as error:
        return _projects_page(request, error=error.message, status=400)
    request.session[SESSION_KEY] = project.id
    return redirect("accounts:projects")


@require_POST
@login_required
def member_add(request, project_id: str):
    """Add a member to the project the form names (the page's, whichever the session acts in now)."""
    try:
        services.member_add(project=selectors.project_get(request.user, project_id), by=request.user,
                            user=request.POST.get("user", ""), role=request.POST.get("role", Membership.Role.MEMBER))
    except InvalidRequest as error:
        return _projects_page(request, error=error.message, status=error.status)
    return redirect("accounts:projects")


@require_POST
@login_required
def member_remove(request, project_id: str, user_id: int):
    try:
        services.member_remove(project=selectors.project_get(request.user, project_id), by=request.user,
                               user_id=user_id)
    except InvalidRequest as error:
        return _projects_page(request, error=error.message, status=error.status)
    if user_id == request.user.pk and request.session.get(SESSION_KEY) == project_id:
        request.session.pop(SESSION_KEY)  # left the project acted in: back to the personal one
    return redirect("accounts:projects")
