from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from finetune_site.errors import InvalidRequest
from models_app.base_models import selectors, services
from models_app.base_models.forms import BaseModelForm


def _list_context(request, form: BaseModelForm, error: str = "") -> dict:
    return {"base_models": selectors.base_models_visible_to(request.user), "form": form, "register_error": error}


@login_required
def base_model_list(request):
    return render(request, "base_models/base_model_list.html", _list_context(request, BaseModelForm()))


@require_POST
@login_required
def base_model_register(request):
    form = BaseModelForm(request.POST, request.FILES)
    try:
        if not form.is_valid():
            raise InvalidRequest(" ".join(e for errors in form.errors.values() for e in errors))
        data = form.cleaned_data
        base = services.base_model_register(owner=request.user, name=data["name"], source=data["source"],
                                            revision=data["revision"], archive=data["file"])
    except InvalidRequest as error:
        return render(request, "base_models/base_model_list.html", _list_context(request, form, error.message),
                      status=400)
    url = reverse("base_models:detail", args=[base.name])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
def base_model_detail(request, name: str):
    base = selectors.base_model_get(request.user, name)
    if request.htmx:
        return render(request, "base_models/partials/base_model_facts.html", {"base": base})
    return render(request, "base_models/base_model_detail.html", {"base": base,
                                                                  "usage": selectors.base_model_usage(base)})
