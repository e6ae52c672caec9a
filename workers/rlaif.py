"""RLAIF, reinforcement learning from AI feedback, offline: prompts in, a tuned model out.

1. The policy (the base model) samples ``num_generations`` answers to every prompt.
2. The grader ranks them (``workers.graders``; a ``score_model`` judge reads its written rubric, the
   "constitution"). The best and the worst answer of a prompt become a preference pair; a prompt whose
   answers all score the same teaches nothing and is left out.
3. The pairs are written as a preference file (``prompt``/``chosen``/``rejected`` chat rows) and reported
   as ``ArtifactSaved(kind="preferences")``: the platform stores them as a new version of the prompts.
4. DPO trains on the pairs (``workers.training``), with the base as its reference.
"""

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from workers.config import Stop, TrainConfig, TrainResult
from workers.events import ArtifactSaved, Emit, LogLine
from workers.formats import jsonl_rows
from workers.graders import grade
from workers.inference import GenerateConfig, generate, inference_model_load

PREFERENCES = "preferences.jsonl"


@dataclass(frozen=True)
class Ranking:
    """What sampling and judging found. prompts: read; pairs: written (prompts whose answers differ in
    score); ties: prompts left out; chosen / rejected: the mean score of the kept best and worst answers."""

    prompts: int
    pairs: int
    ties: int
    chosen: float
    rejected: float

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "pairs": self.pairs, "ties": self.ties,
                "mean_chosen_score": round(self.chosen, 4), "mean_rejected_score": round(self.rejected, 4)}


def preferences_sample(config: TrainConfig, target: Path, should_stop: Callable[[], Stop | bool] = lambda: Stop.NO,
                       judge=None) -> Ranking | None:
    """Sample and rank answers to every prompt of ``config.train_file``; write the pairs to ``target``.
    None when ``should_stop`` asked to stop (nothing is written)."""
    from workers.training import _judge

    grader = json.loads(config.grader)
    judge = judge or _judge(config)
    policy = inference_model_load(config.model_path)
    with open(target, "w", encoding="utf-8") as pairs:  # written as they come: a file of any size fits
        ranking = _pairs_write(config, pairs, grader, policy, judge, should_stop)
    if ranking is None:
        target.unlink()
    return ranking


def _pairs_write(config: TrainConfig, pairs, grader: dict, policy, judge, should_stop) -> Ranking | None:
    ties, chosen, rejected, prompts = 0, [], [], 0
    for index, row in enumerate(jsonl_rows(config.train_file)):
        if should_stop():
            return None
        prompts += 1
        messages = [{"role": m["role"], "content": m.get("content") or ""} for m in row["messages"]
                    if m["role"] != "assistant"]
        answers = sorted({generate(policy, GenerateConfig(
            messages=tuple(messages), max_tokens=config.max_completion_length, temperature=config.temperature,
            seed=config.seed * 100_003 + index * 101 + n)).text for n in range(config.num_generations)})
        scored = sorted(((grade(grader, sample=answer, item=row, judge=judge).reward, answer) for answer in answers),
                        key=lambda pair: pair[0])
        (low, worst), (high, best) = scored[0], scored[-1]
        if high == low:
            ties += 1
            continue
        pair = {"prompt": messages, "chosen": [{"role": "assistant", "content": best}],
                "rejected": [{"role": "assistant", "content": worst}]}
        pairs.write(json.dumps(pair, ensure_ascii=False) + "\n")
        chosen.append(high)
        rejected.append(low)
    return Ranking(prompts=prompts, pairs=len(chosen), ties=ties, chosen=statistics.fmean(chosen or [0.0]),
                   rejected=statistics.fmean(rejected or [0.0]))


def run_rlaif(config: TrainConfig, emit: Emit, should_stop: Callable[[], Stop | bool] = lambda: Stop.NO
              ) -> TrainResult:
    """Sample, judge and store the pairs, then DPO on them (``config``'s options: num_generations,
    max_completion_length and temperature for sampling; beta, batch_size, n_epochs, ... for DPO)."""
    from workers.training import run_training

    target = Path(config.output_dir) / PREFERENCES
    target.parent.mkdir(parents=True, exist_ok=True)
    emit(LogLine(f"Sampling {config.num_generations} answers to each prompt and ranking them with the grader"))
    ranking = preferences_sample(config, target, should_stop)
    if ranking is None:
        asked = should_stop()
        return TrainResult(adapter_dir="", steps=0, total_steps=0, trained_tokens=0, train_loss=0.0,
                           wall_seconds=0.0, tokens_per_second=0.0, stopped=True,
                           stop=Stop.CHECKPOINT if asked == Stop.CHECKPOINT else Stop.DISCARD)
    emit(LogLine(f"Judged {ranking.prompts} prompts: {ranking.pairs} preference pairs (mean score chosen "
                 f"{ranking.chosen:.3g}, rejected {ranking.rejected:.3g}), {ranking.ties} prompts tied"))
    if not ranking.pairs:
        raise ValueError("the grader scored every answer of every prompt the same: no preference pair to learn "
                         "from; sample more answers (num_generations), raise the temperature or change the rubric")
    emit(ArtifactSaved(kind="preferences", path=str(target), metrics=ranking.as_dict()))
    # a validation file holds prompts, which DPO cannot score: the pairs alone train
    # streamed as the prompts were: the pairs are fewer than the prompts (ties are left out)
    return run_training(replace(config, objective="dpo", grader="", judges="", train_file=str(target),
                                validation_file=None, stream_rows=ranking.pairs if config.stream_rows else 0),
                        emit, should_stop)
