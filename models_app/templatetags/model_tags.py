from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """``mapping[key]`` in a template, or None."""
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.simple_tag
def evaluation_table(evaluation) -> dict:
    """The metric rows and chart data of an evaluation (see models_app.selectors.evaluation_tables)."""
    from models_app.selectors import evaluation_tables

    return evaluation_tables(evaluation)
