"""Judges of ``score_model`` graders: models of this platform, on local disk, that read the grader's
rubric and answer with a score (``workers.graders`` parses the number).

A judge answers greedily (temperature 0: the same answer to the same messages) unless the grader's
``sampling_params`` say otherwise; ``max_completion_tokens`` bounds its answer (default
``DEFAULT_ANSWER_TOKENS``). Loaded models are kept in a ``workers.inference.ModelCache``, so a
judge used for every sample of a run loads once.
"""

from collections.abc import Mapping

from workers.graders import Judge
from workers.inference import GenerateConfig, ModelCache, generate

DEFAULT_ANSWER_TOKENS = 16  # a score, perhaps with a word around it


def judge_make(models: Mapping[str, tuple[str, str | None]], *, cache: ModelCache | None = None) -> Judge:
    """The judge of ``workers.graders.grade`` for the models a grader names: ``models`` maps each name
    to its local files, ``(base model directory, adapter or full model directory or None)``. A name not
    in ``models`` is a KeyError (the grader's error, its reward 0)."""
    cache = ModelCache(size=max(1, len(models))) if cache is None else cache  # an empty cache is falsy

    def judge(model: str, messages: list[dict], sampling_params: Mapping | None = None) -> str:
        if model not in models:
            raise KeyError(f"the judge {model!r} is not available to this run")
        params = dict(sampling_params or {})
        loaded, _ = cache.get(*models[model])
        config = GenerateConfig(messages=tuple(messages), temperature=float(params.get("temperature", 0.0)),
                                top_p=float(params.get("top_p", 1.0)), seed=0,
                                max_tokens=int(params.get("max_completion_tokens", DEFAULT_ANSWER_TOKENS)))
        return generate(loaded, config).text

    return judge
