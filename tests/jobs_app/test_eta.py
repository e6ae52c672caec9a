"""The live ETA counts what is left of the whole job, not only the steps."""

import pytest

from jobs_app.services.engine import EtaClock

ESTIMATE = {"evals": 2, "saves": 2, "parts": {"validation": 8.0, "checkpoints": 2.0, "finishing": 1.5,
                                              "evaluation": 20.0}}


def _clock(steps: int, *, step_seconds: float = 0.5) -> EtaClock:
    clock = EtaClock(ESTIMATE)
    for index in range(steps + 1):  # the first step ends the warm-up: it is not timed
        clock.step_ended(index * step_seconds)
    return clock


def test_no_eta_until_a_few_steps_are_timed():
    assert _clock(1).seconds_left(2, 20) is None
    assert _clock(2).seconds_left(3, 20) is not None


def test_the_eta_adds_passes_checkpoints_and_what_comes_after_training():
    clock = _clock(4)  # 0.5 s a step
    steps, passes, saves, after = 15 * 0.5, 2 * 4.0, 2 * 1.0, 21.5
    assert clock.seconds_left(5, 20) == pytest.approx(steps + passes + saves + after)


def test_measured_passes_and_saves_replace_the_estimate_and_done_ones_drop_out():
    clock = _clock(9)
    clock.eval_ended(4.5 + 3.0)  # the epoch's pass took 3 s, then its checkpoint 0.5 s
    clock.save_ended(4.5 + 3.5)
    clock.step_ended(8.5)
    left = clock.seconds_left(11, 20)
    assert left == pytest.approx(9 * 0.5 + 1 * 3.0 + 1 * 0.5 + 21.5)


def test_a_pass_at_the_logged_step_is_still_ahead():
    """The trainer logs a step, then validates and saves: at the epoch's last step both are ahead."""
    assert _clock(9).seconds_left(10, 20) == pytest.approx(10 * 0.5 + 2 * 4.0 + 2 * 1.0 + 21.5)


def test_passes_ahead_are_those_not_yet_seen_even_off_the_beat():
    """Passes every 4 steps of 6 come after steps 4 and 6: at step 4's log line both are ahead, and
    after the first one ended only the last is."""
    clock = EtaClock({"evals": 2, "saves": 0, "parts": {"validation": 8.0}})
    for step in range(1, 5):
        clock.step_ended(step * 0.5, step)
    assert clock.seconds_left(4, 6) == pytest.approx(2 * 0.5 + 2 * 4.0)
    clock.eval_ended(2.0 + 3.0)
    clock.step_ended(5.5, 5)
    assert clock.seconds_left(5, 6) == pytest.approx(1 * 0.5 + 1 * 3.0)


def test_a_resumed_attempt_counts_the_passes_made_before_it_as_done():
    clock = EtaClock({"evals": 2, "saves": 0, "parts": {"validation": 8.0}})
    for step in range(11, 15):  # resumed at step 11 of 20, after the first epoch's pass
        clock.step_ended((step - 11) * 0.5, step)
    assert clock.seconds_left(14, 20) == pytest.approx(6 * 0.5 + 1 * 4.0)
