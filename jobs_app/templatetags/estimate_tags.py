from django import template

from jobs_app.services.estimates import duration_text

register = template.Library()
PART_NAMES = {"setup": "loading the model and data", "training": "training steps",
              "validation": "validation passes", "checkpoints": "checkpoints", "finishing": "saving the result",
              "evaluation": "evaluation against the base"}


@register.filter
def duration(seconds) -> str:
    """Seconds as a person says them: ``42 s``, ``3 min 5 s``."""
    return "" if seconds is None else duration_text(float(seconds))


@register.filter
def part_name(part: str) -> str:
    return PART_NAMES.get(part, part)
