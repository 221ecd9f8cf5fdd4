"""verl console-log parsing, on lines as the H200 run printed them (Ray prefix, ANSI colours, numpy scalars)."""

from __future__ import annotations

from r1aqa_plugin.verl_log import step_metrics

LOG = (
    "\x1b[36m(TaskRunnerV1 pid=1804)\x1b[0m step:2 - actor/entropy:11.878597259521484 - "
    "training/rollout_actor_probs_pearson_corr:0.9999794363975525 - num_turns/min:np.int32(2) - "
    "num_turns/mean:np.float64(2.0) - timing_s/gen:2.2246726939999917 - note:text\n"
    "\x1b[36m(WorkerDict pid=2)\x1b[0m INFO unrelated line with step:x\n"
    "step:1 - timing_s/step:38.1 - val-core/synthetic-aqa/sound/acc/mean@1:0.25\n"
)


def test_metrics_are_read_per_step_in_order_with_numpy_scalars_as_numbers():
    steps = step_metrics(LOG)
    assert list(steps) == [1, 2]
    assert steps[2]["training/rollout_actor_probs_pearson_corr"] == 0.9999794363975525
    assert steps[2]["num_turns/min"] == 2.0 and steps[2]["num_turns/mean"] == 2.0
    assert steps[2]["note"] == "text"
    assert steps[1]["val-core/synthetic-aqa/sound/acc/mean@1"] == 0.25


def test_a_log_without_metric_lines_gives_nothing():
    assert step_metrics("hello\nstep: not a metric line\n") == {}
