"""A request body whose every key must be a known field.

DRF drops keys a serializer does not declare, so a typo (``"sufix"``, ``"validaton_file"``) was
accepted and silently did nothing: the job ran without its validation file. OpenAI answers such a
body with a 400 ("Unrecognized request argument supplied"); so do the bodies that use this class.
"""

from collections.abc import Mapping

from rest_framework import serializers


def unknown_keys_problem(data, known, where: str = "") -> tuple[str, str] | None:
    """(param, message) for the first key of ``data`` not in ``known``; None when all are known."""
    if not isinstance(data, Mapping):
        return None
    unknown = [key for key in data if key not in known]
    if not unknown:
        return None
    param = f"{where}.{unknown[0]}" if where else str(unknown[0])
    return param, (f"Unrecognized request argument supplied: {param}; known: "
                   f"{', '.join(sorted(str(key) for key in known))}")


class KnownFieldsSerializer(serializers.Serializer):
    """A serializer that refuses keys it does not declare (400 naming the first one)."""

    def to_internal_value(self, data):
        problem = unknown_keys_problem(data, self.fields)
        if problem:
            raise serializers.ValidationError({problem[0]: [problem[1]]})
        return super().to_internal_value(data)
