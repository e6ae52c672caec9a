from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from datasets_app import selectors, services
from datasets_app.live import dataset_detail_context, prepare_form_for
from finetune_site.errors import Conflict, InvalidRequest
from workers.formats import ALPACA, CHAT, EXAMPLE_ROW, PREFERENCE, PROMPT_COMPLETION, TEXT

PAGE_SIZE = 50
PURPOSES = [("", "any"), ("fine-tune", "text (fine-tune)"), ("vision", "images (vision)")]


UPLOAD_FORMATS = [("chat", EXAMPLE_ROW[CHAT]), ("alpaca", EXAMPLE_ROW[ALPACA]),
                  ("prompt/completion", EXAMPLE_ROW[PROMPT_COMPLETION]), ("preference", EXAMPLE_ROW[PREFERENCE]),
                  ("text", EXAMPLE_ROW[TEXT] + "  (or a .txt file, one document per line)")]


@login_required
def dataset_list(request):
    found = selectors.DatasetFilter(request.GET, queryset=selectors.datasets_listed(request.user))
    rows = found.qs if found.is_valid() else found.queryset.none()
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "datasets_app/dataset_list.html",
                  {"page": page, "filters": found.form, "query": query.urlencode(), "purposes": PURPOSES,
                   "upload_error": "", "upload_formats": UPLOAD_FORMATS}, status=200 if found.is_valid() else 400)


@require_POST
@login_required
def dataset_upload(request):
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise InvalidRequest("Choose a training file to upload.", param="file")
        dataset = services.dataset_upload(owner=request.user, upload=upload,
                                          purpose=request.POST.get("purpose") or "fine-tune",
                                          options={"format": request.POST.get("format", "")})
    except InvalidRequest as error:
        context = {"upload_error": error.message, "upload_formats": UPLOAD_FORMATS,
                   "upload_text": request.POST.get("format") == "text",
                   "upload_vision": request.POST.get("purpose") == "vision"}
        if request.htmx:
            return render(request, "datasets_app/partials/upload_form.html", context, status=400)
        page = Paginator(selectors.datasets_listed(request.user), PAGE_SIZE).get_page(1)
        return render(request, "datasets_app/dataset_list.html", {**context, "page": page}, status=400)
    url = reverse("datasets:detail", args=[dataset.id])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
@login_required
def dataset_hub(request):
    fields = {name: request.POST.get(name, "").strip() for name in ("hub_id", "split", "revision")}
    try:
        dataset = services.dataset_hub_create(owner=request.user, **fields)
    except InvalidRequest as error:
        page = Paginator(selectors.datasets_listed(request.user), PAGE_SIZE).get_page(1)
        return render(request, "datasets_app/dataset_list.html",
                      {"page": page, "upload_error": "", "upload_formats": UPLOAD_FORMATS, "hub": fields,
                       "hub_error": error.message}, status=400)
    return redirect("datasets:detail", dataset.id)


@login_required
def dataset_detail(request, file_id: str):
    dataset = selectors.dataset_get(request.user, file_id)
    if request.htmx:
        return render(request, "datasets_app/partials/dataset_status.html", {"dataset": dataset})
    try:
        page = int(request.GET.get("page", 1))
    except ValueError:
        page = 1
    return render(request, "datasets_app/dataset_detail.html", dataset_detail_context(dataset, page=page))


@require_POST
@login_required
def dataset_stats_request(request, file_id: str):
    """Count the page's tokens now (the page's button for a dataset counted before, or a failure)."""
    dataset = selectors.dataset_get(request.user, file_id)
    try:
        services.token_stats_ensure(dataset=dataset)
    except (Conflict, InvalidRequest) as refused:
        messages.error(request, refused.message)
    return redirect("datasets:detail", file_id=dataset.id)


@login_required
def dataset_thumbnail(request, file_id: str, index: int):
    """A vision dataset's thumbnail for its report page (the owner's only)."""
    dataset = selectors.dataset_get(request.user, file_id)
    name = selectors.dataset_thumbnail_name(dataset, index)
    response = FileResponse(default_storage.open(name, "rb"), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_POST
@login_required
def dataset_prepare(request, file_id: str):
    """Prepare a new version from the page's form, through the API's service; on a refusal the page
    comes back with the message next to the field it concerns, and nothing is stored."""
    dataset = selectors.dataset_get(request.user, file_id)
    form = prepare_form_for(dataset, request.POST)
    if form.is_valid():
        try:
            versions = services.dataset_prepare(dataset=dataset, operations=form.operations)
        except (Conflict, InvalidRequest) as refused:
            form.service_error(refused)
        else:
            made = " and ".join(v.filename for v in versions)
            messages.success(request, f"Made {made} from {dataset.filename}." + (
                "" if versions[0].is_final else " A worker checks the rows; this page follows it."))
            return redirect("datasets:detail", file_id=versions[0].id)
    context = dataset_detail_context(dataset, prepare_form=form)
    return render(request, "datasets_app/dataset_detail.html", context, status=400)
