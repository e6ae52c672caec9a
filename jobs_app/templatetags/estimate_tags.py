from django import template

register = template.Library()
PART_NAMES = {"setup": "loading the model and data", "training": "training steps",
              "validation": "validation passes", "checkpoints": "checkpoints", "finishing": "saving the result",
              "evaluation": "evaluation against the base"}


@register.filter
def part_name(part: str) -> str:
    """What a part of a job's estimate is, in words."""
    return PART_NAMES.get(part, part)
