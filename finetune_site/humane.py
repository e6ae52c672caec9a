"""Numbers, sizes, durations, times and metric names as people read them.

Pages load these as ``{% load humane %}`` (registered in settings ``TEMPLATES``): ``number``
(thousands separators), ``binary_size`` (bytes in KiB/MiB/GiB), ``duration`` (seconds as
"3 min 05 s"), ``metric_rows`` (a metric dict as named, rounded rows without internal keys) and
``{% when value %}`` (a ``<time>`` saying "3 minutes ago", the exact time in its title). The plain
functions serve Python callers too (messages, the launcher).
"""

import math
from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

from workers.containers import size_text

register = template.Library()

# Keys that are bookkeeping, not results: the page says them another way or not at all.
HIDDEN_METRICS = frozenset({"time", "eta_seconds", "step", "total_steps", "devices", "checkpoint_step"})
# name, kind; in the order a page lists them. Unknown keys follow, named from the key.
METRICS: dict[str, tuple[str, str]] = {
    "train_loss": ("train loss", "loss"),
    "mean_train_loss": ("mean train loss (whole run)", "loss"),
    "valid_loss": ("validation loss", "loss"),
    "eval_loss": ("validation loss", "loss"),
    "learning_rate": ("learning rate", "rate"),
    "grad_norm": ("gradient norm", "real"),
    "epoch": ("epoch", "real"),
    "steps": ("steps", "count"),
    "tokens": ("tokens seen", "count"),
    "tokens_per_second": ("tokens/s", "speed"),
    "wall_seconds": ("wall time", "duration"),
    "train_runtime": ("wall time", "duration"),
    "peak_memory_bytes": ("peak memory", "bytes"),
    "device": ("device", "device"),
}
DEVICES = {"cpu": "CPU", "cuda": "GPU (CUDA)", "mps": "Apple GPU (MPS)"}


def number_text(value, decimals: int | None = None) -> str:
    """``12345`` → "12,345"; a float keeps ``decimals`` places (default: by size, "1,235", "12.3", "0.0123")."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        else:
            return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if decimals is None else f"{value:,.{decimals}f}"
    if not math.isfinite(value):
        return str(value)
    if decimals is not None:
        return f"{value:,.{decimals}f}"
    size = abs(value)
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 else f"{value:.3g}"


def binary_size_text(count) -> str:
    """Bytes for people, in powers of 1024: "512 bytes", "3.42 KiB", "775 MiB", "1.3 GiB"."""
    return "" if count is None or count == "" else size_text(int(count))


def duration_text(seconds) -> str:
    """Seconds for people: "0.4 s", "45 s", "3 min 05 s", "2 h 07 min", "3 d 4 h"."""
    if seconds is None or seconds == "":
        return ""
    seconds = float(seconds)
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds % 1 else f"{seconds:.0f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def metric_value_text(key: str, value) -> str:
    """One metric's value, formatted for its kind (loss, rate, bytes, duration, ...)."""
    kind = METRICS.get(key, ("", "real"))[1]
    if value is None:
        return "–"
    if kind == "device":
        return DEVICES.get(str(value), str(value))
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if kind == "loss":
        return f"{value:.4f}"
    if kind == "rate":
        return f"{value:.2e}" if value and abs(value) < 0.01 else f"{value:.4g}"
    if kind == "count":
        return number_text(int(value))
    if kind == "speed":
        return number_text(value, 0 if value >= 100 else 1)
    if kind == "duration":
        return duration_text(value)
    if kind == "bytes":
        return binary_size_text(value)
    return f"{value:,.4g}" if isinstance(value, float) else number_text(value)


def metric_rows(metrics: dict | None) -> list[tuple[str, str]]:
    """``(name, value)`` rows of a metric dict: known metrics first, named and rounded; internal keys dropped."""
    metrics = metrics or {}
    shown, rows = set(), []
    for key in [*METRICS, *sorted(metrics)]:
        if key not in metrics or key in HIDDEN_METRICS or key in shown:
            continue
        name = METRICS.get(key, (key.replace("_", " "), ""))[0]
        if name in {n for n, _ in rows}:  # eval_loss and valid_loss: one row
            continue
        shown.add(key)
        rows.append((name, metric_value_text(key, metrics[key])))
    return rows


def count_text(count, unit: str) -> str:
    """"1 second", "3 seconds", "1,200 steps": a count with its unit, plural unless it is one."""
    return f"{count:,} {unit}{'' if count == 1 else 's'}"


def ended_text(status: str) -> str:
    """How an ended job or sweep is said in a refusal: "has already been cancelled", "has already failed"."""
    return "has already been cancelled" if status == "cancelled" else f"has already {status}"


def ago_text(value: datetime, now: datetime | None = None) -> str:
    """"just now", "45 seconds ago", "3 minutes ago", "2 hours ago", "5 days ago" (or "in …" ahead)."""
    now = now or timezone.now()
    seconds = (now - value).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    if seconds < 5:
        return "just now"
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600),
                       ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            words = count_text(count, unit)
            return f"in {words}" if ahead else f"{words} ago"
    return "just now"


@register.filter
def number(value, decimals=None):
    """``{{ rows|number }}`` → "12,345"; ``{{ x|number:2 }}`` → "1,234.57"."""
    return number_text(value, None if decimals in (None, "") else int(decimals))


@register.filter
def binary_size(value):
    return binary_size_text(value)


@register.filter
def duration(value):
    return duration_text(value)


@register.filter
def heat(count, row) -> int:
    """``{{ count|heat:row }}``: 0 to 4, the share of ``row``'s total that ``count`` is, for shading a
    confusion matrix's cell (a row: the images of one true class)."""
    total = sum(row or ())
    return round(4 * count / total) if total else 0


@register.filter(name="metric_rows")
def metric_rows_filter(value):
    return metric_rows(value)


@register.simple_tag
def when(value, fmt: str = "Y-m-d H:i:s"):
    """``<time datetime=… title="exact">3 minutes ago</time>``; static/app.js keeps the words current."""
    if not value:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    from django.utils.dateformat import format as date_format

    return format_html('<time datetime="{}" title="{} {}" data-relative>{}</time>', value.isoformat(),
                       date_format(local, fmt), local.tzname() or "", ago_text(value))
