from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from accounts_app import services


@login_required
def tokens(request):
    token = Token.objects.filter(user=request.user).first()
    # The key is shown once, right after creation; afterwards only its first characters.
    new_key = request.session.pop("new_token_key", None)
    return render(request, "accounts_app/tokens.html", {"token": token, "new_key": new_key})


@require_POST
@login_required
def token_create(request):
    token = services.token_create(user=request.user)
    request.session["new_token_key"] = token.key
    return redirect("accounts:tokens")


@require_POST
@login_required
def token_revoke(request):
    services.token_revoke(user=request.user)
    return redirect("accounts:tokens")
