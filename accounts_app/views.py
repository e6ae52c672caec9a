from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts_app import services
from accounts_app.forms import ApiKeyCreateForm, LoginForm
from accounts_app.models import ApiKey
from finetune_site.errors import InvalidRequest, NotFound


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    template_name = "accounts_app/login.html"

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.locked_seconds:
            response.status_code = 429
            response["Retry-After"] = str(form.locked_seconds)
        return response


def _tokens_page(request, *, form=None, new_key: str = "", status: int = 200):
    keys = ApiKey.objects.filter(user=request.user)
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
