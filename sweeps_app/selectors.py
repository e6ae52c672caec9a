"""Reads of sweeps that the API and the pages share."""

from django.db.models import QuerySet
from django.http import Http404

from accounts_app.selectors import project_acting
from sweeps_app.models import Sweep

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 480, 220, 36


def sweeps_visible_to(user) -> QuerySet[Sweep]:
    """The sweeps of the project ``user`` acts in."""
    return Sweep.objects.filter(project=project_acting(user))


def sweep_get(user, sweep_id: str) -> Sweep:
    """A sweep of the user's project, or 404 (another project's sweep does not exist for them)."""
    sweep = sweeps_visible_to(user).filter(pk=sweep_id).first()
    if sweep is None:
        raise Http404(f"No such sweep: {sweep_id}")
    return sweep


def sweep_trials(sweep: Sweep) -> list:
    return list(sweep.trials.select_related("job", "job__result_model").order_by("number"))


def sweep_chart(sweep: Sweep, trials: list, best_number: int | None) -> dict:
    """The objective of each complete trial against its number, as SVG coordinates (drawn server-side)."""
    scored = [t for t in trials if t.value is not None]
    if not scored:
        return {"points": []}
    low, high = min(t.value for t in scored), max(t.value for t in scored)
    span = (high - low) or 1.0
    last = max(sweep.max_trials - 1, 1)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD

    def x(number: int) -> float:
        return round(CHART_PAD + inner_w * number / last, 1)

    def y(value: float) -> float:
        return round(CHART_PAD + inner_h * (1 - (value - low) / span), 1)

    points = [{"x": x(t.number), "y": y(t.value), "number": t.number, "value": t.value,
               "best": t.number == best_number} for t in scored]
    return {"points": points, "width": CHART_WIDTH, "height": CHART_HEIGHT, "pad": CHART_PAD,
            "bottom": CHART_HEIGHT - CHART_PAD, "right": CHART_WIDTH - CHART_PAD, "low": low, "high": high,
            "metric": sweep.metric, "max_trials": sweep.max_trials}
