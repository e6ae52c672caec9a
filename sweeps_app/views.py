from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from finetune_site.errors import InvalidRequest
from sweeps_app import selectors, services


@login_required
def sweep_list(request):
    return render(request, "sweeps_app/sweep_list.html", {"sweeps": selectors.sweeps_visible_to(request.user)[:100]})


@login_required
def sweep_detail(request, sweep_id: str):
    sweep = selectors.sweep_get(request.user, sweep_id)
    trials = selectors.sweep_trials(sweep)
    best = services.sweep_best_trial(sweep)
    return render(request, "sweeps_app/sweep_detail.html", {
        "sweep": sweep, "trials": trials, "best": best, "actions": services.sweep_actions(sweep),
        "chart": selectors.sweep_chart(sweep, trials, best.number if best else None)})


def _act(request, sweep_id: str, action, success) -> object:
    """Run a service on the user's sweep; say what happened (or why not) on its page."""
    sweep = selectors.sweep_get(request.user, sweep_id)
    try:
        done = action(sweep)
    except InvalidRequest as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, success(done))
    return redirect("sweeps:detail", sweep_id=sweep.id)


@require_POST
@login_required
def sweep_promote_best(request, sweep_id: str):
    alias = request.POST.get("alias", "production").strip() or "production"
    return _act(request, sweep_id, lambda sweep: services.sweep_promote_best(sweep=sweep, alias=alias),
                lambda promoted: f"{promoted.name}@{alias} now points at the best trial's model {promoted.model_id}")


@require_POST
@login_required
def sweep_cancel(request, sweep_id: str):
    return _act(request, sweep_id, lambda sweep: services.sweep_cancel(sweep=sweep),
                lambda sweep: f"Sweep {sweep.id} cancelled: no new trials; its unfinished jobs are cancelled")
