"""biwaa_tf.trust against independent computations on data whose posteriors are known:
three classes of 1-D Gaussians, the source prior PI, the target prior Q."""

import numpy as np
import pytest

from biwaa_tf import trust

MEANS = np.array([-2.0, 0.0, 2.0])
PI = np.array([0.5, 0.3, 0.2])
Q = np.array([0.1, 0.3, 0.6])


def sample(prior, n, seed):
  """(exact posteriors under PI, labels) of n draws with class prior `prior`."""
  rng = np.random.default_rng(seed)
  y = rng.choice(len(prior), n, p=prior)
  x = rng.normal(MEANS[y], 1.0)
  like = np.exp(-0.5 * (x[:, None] - MEANS[None]) ** 2)
  post = PI * like
  return post / post.sum(1, keepdims=True), y, x


def test_mlls_equals_a_grid_search_of_the_likelihood():
  two = np.array([0.7, 0.3])
  rng = np.random.default_rng(0)
  probs = rng.dirichlet([1.0, 1.0], 400)
  grid = np.linspace(1e-4, 1 - 1e-4, 20001)
  ll = [np.log(probs @ (np.array([g, 1 - g]) / two)).sum() for g in grid]
  best = grid[int(np.argmax(ll))]
  assert trust.mlls_prior(probs, two)[0] == pytest.approx(best, abs=1e-4)


@pytest.mark.parametrize("estimator", ["mlls", "bbse"])
def test_prior_estimates_recover_the_target_prior(estimator):
  held_p, held_y, _ = sample(PI, 4000, 1)
  target_p, _, _ = sample(Q, 20000, 2)
  if estimator == "mlls":
    q = trust.mlls_prior(target_p, PI)
  else:
    q = trust.bbse_prior(held_p, held_y, target_p, PI)
  assert trust.total_variation(q, Q) < 0.03, q
  # No shift: the estimate stays at the source prior.
  same_p, _, _ = sample(PI, 20000, 3)
  q0 = trust.mlls_prior(same_p, PI) if estimator == "mlls" else trust.bbse_prior(
      held_p, held_y, same_p, PI)
  assert trust.total_variation(q0, PI) < 0.03, q0


def test_bcts_undoes_a_temperature_and_a_bias():
  probs, y, _ = sample(PI, 20000, 4)
  bias = np.array([0.5, 0.0, -0.5])
  wrong = trust.apply_bcts(probs, 1 / 3, bias)  # over-confident and biased
  t, b = trust.calibrate_bcts(wrong, y)
  assert t == pytest.approx(3.0, rel=0.05)
  np.testing.assert_allclose(b - b.mean(), -(bias - bias.mean()) / 3, atol=0.05)
  fixed = trust.apply_bcts(wrong, t, b)
  nll = lambda p: -np.mean(np.log(p[np.arange(len(y)), y]))  # noqa: E731
  assert nll(fixed) < nll(wrong) - 0.05
  assert nll(fixed) == pytest.approx(nll(probs), abs=5e-3)  # the exact posteriors' NLL


def test_bcts_keeps_a_finite_temperature_on_a_perfectly_classified_split():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
  labels = np.array([0, 1, 0, 1])  # every argmax right: sharper is always better
  t, b = trust.calibrate_bcts(probs, labels)
  # the ridge on 1/T - 1 balances the vanishing gain: at the optimum the NLL's slope in
  # a = 1/T equals -2 * ridge * (a - 1)
  a = 1 / t
  p = trust.apply_bcts(probs, t, b)
  logits = np.log(probs)
  slope = np.mean(((p - np.eye(2)[labels]) * logits).sum(1))
  assert 1 < a < 1e3 and slope == pytest.approx(-2e-4 * (a - 1), rel=1e-3)


def test_prior_correction_gives_the_target_posterior():
  probs, _, x = sample(Q, 50, 5)
  like = np.exp(-0.5 * (x[:, None] - MEANS[None]) ** 2)
  direct = Q * like / (Q * like).sum(1, keepdims=True)
  np.testing.assert_allclose(trust.prior_corrected(probs, PI, Q), direct, atol=1e-12)


def test_bootstrap_interval_covers_the_true_prior_and_is_narrower_with_more_data():
  held_p, held_y, _ = sample(PI, 1000, 6)
  widths = []
  for n, seed in ((300, 7), (3000, 8)):
    target_p, _, _ = sample(Q, n, seed)
    q, lo, hi = trust.bootstrap_prior(lambda h, hy, t: trust.mlls_prior(t, PI), held_p,
                                      held_y, target_p, rounds=100)
    assert np.all(lo <= Q) and np.all(Q <= hi), (lo, hi)
    assert np.all(lo <= q) and np.all(q <= hi)
    widths.append((hi - lo).max())
  assert widths[1] < widths[0] / 2


def test_shift_test_accounts_for_the_target_size():
  held_p, held_y, _ = sample(PI, 1000, 9)
  estimate = lambda h, hy, t: trust.mlls_prior(t, PI)  # noqa: E731
  for n, seed in ((200, 10), (2000, 11)):
    same, _, _ = sample(PI, n, seed)
    tv, null_q, p = trust.shift_test(estimate, held_p, held_y, same, PI, rounds=100)
    assert p > 0.05 and tv < null_q
  shifted, _, _ = sample(np.array([0.35, 0.3, 0.35]), 2000, 12)  # TV 0.15 from PI
  tv, null_q, p = trust.shift_test(estimate, held_p, held_y, shifted, PI, rounds=100)
  assert p < 0.05 and tv > null_q


def test_atc_estimates_accuracy_without_shift():
  held_p, held_y, _ = sample(PI, 4000, 13)
  t = trust.atc_threshold(held_p, held_y)
  error = np.mean(held_p.argmax(1) != held_y)
  # The held-out share below the threshold is its error rate, by construction.
  assert np.mean(trust.confidence(held_p) < t) == pytest.approx(error, abs=1 / 4000)
  fresh_p, fresh_y, _ = sample(PI, 20000, 14)
  true = np.mean(fresh_p.argmax(1) == fresh_y)
  assert trust.atc_accuracy(t, fresh_p) == pytest.approx(true, abs=0.02)


def test_confusion_and_disagreement():
  rng = np.random.default_rng(15)
  probs, y = rng.dirichlet([1.0] * 3, 50), rng.integers(0, 3, 50)
  c = trust.confusion_joint(probs, y, 3)
  loop = np.zeros((3, 3))
  for p, label in zip(probs, y):
    loop[:, label] += p / 50
  np.testing.assert_allclose(c, loop)
  other = rng.dirichlet([1.0] * 3, 50)
  gap = abs(np.mean(probs.argmax(1) == y) - np.mean(other.argmax(1) == y))
  assert gap <= trust.disagreement(probs, other)


def test_assess_estimates_from_the_candidates_and_the_source_only_model():
  held_p, held_y, _ = sample(PI, 600, 16)
  target_p, target_y, _ = sample(Q, 3000, 17)
  flat = np.full_like(target_p, 1 / 3)  # a useless candidate: every row uniform
  out = trust.assess(held_y, PI, [("source_only", held_p, target_p),
                                  ("flat", np.full_like(held_p, 1 / 3), flat)], rounds=50)
  prior = out["prior"]
  # The mean prediction's argmax is source-only's (the flat rows add a constant).
  direct = np.bincount(target_p.argmax(1), minlength=3) / 3000
  np.testing.assert_allclose(prior["estimate"], direct, atol=1e-4)
  assert all(lo <= q <= hi for lo, q, hi in zip(prior["interval_90"][0], prior["estimate"],
                                                 prior["interval_90"][1]))
  assert trust.total_variation(prior["source_only_mlls"], Q) < 0.05
  assert prior["source_only_shift_p_value"] < 0.05
  source_only, flat_c = out["candidates"]
  assert source_only["estimated_accuracy"] == 1.0
  assert flat_c["estimated_accuracy"] == pytest.approx(direct[0], abs=1e-4)  # argmax: 0
  true = np.mean(target_p.argmax(1) == target_y)
  assert source_only["atc_accuracy"] == pytest.approx(true, abs=0.06)
  assert flat_c["disagreement_with_source_only"] == pytest.approx(1 - direct[0], abs=1e-4)
  assert out["runs_spread"] == 0.0  # one adapted candidate: no pair to disagree


def test_assess_takes_candidates_trained_on_the_heldout_split():
  """The no-shift path's runs train on the split: no held-out outputs, no ATC, and the
  same agreement estimates as with them."""
  held_p, held_y, _ = sample(PI, 300, 18)
  target_p, _, _ = sample(Q, 500, 19)
  run = np.roll(target_p, 1, axis=1)  # another model: its argmax shifted by one class
  with_held = trust.assess(held_y, PI, [("source_only", held_p, target_p),
                                        ("run_0", held_p, run)], rounds=5)
  without = trust.assess(held_y, PI, [("source_only", held_p, target_p),
                                      ("run_0", None, run)], rounds=5)
  so, run_0 = without["candidates"]
  assert run_0["atc_accuracy"] is None and run_0["heldout_accuracy"] is None
  assert so["heldout_accuracy"] == pytest.approx(np.mean(held_p.argmax(1) == held_y),
                                                 abs=1e-4)
  for a, b in zip(with_held["candidates"], without["candidates"]):
    assert a["estimated_accuracy"] == b["estimated_accuracy"]
    assert a["disagreement_with_source_only"] == b["disagreement_with_source_only"]
  assert run_0["disagreement_with_source_only"] == pytest.approx(
      np.mean(run.argmax(1) != target_p.argmax(1)), abs=1e-4)
  assert with_held["prior"] == without["prior"]


def _c(name, acc, dis):
  return {"name": name, "estimated_accuracy": acc, "disagreement_with_source_only": dis}


def test_choose_returns_source_only_unless_an_adapted_model_beats_it_by_the_error():
  so = _c("source_only", 0.80, 0.0)
  assert trust.choose([so, _c("run_0", 0.82, 0.2), _c("run_1", 0.90, 0.2)], 0.03)[0] == 2
  assert trust.choose([so, _c("run_0", 0.82, 0.2), _c("run_1", 0.83, 0.2)], 0.03)[0] == 0
  assert trust.choose([so], 0.03) == (0, "the only model")


def test_runs_spread_is_the_mean_pairwise_disagreement():
  eye = np.eye(3)
  a, b, c = eye[[0, 1, 2, 0]], eye[[0, 1, 1, 1]], eye[[2, 1, 2, 0]]
  # pairs: (a, b) 2/4, (a, c) 1/4, (b, c) 3/4
  assert trust.runs_spread([a, b, c]) == pytest.approx((0.5 + 0.25 + 0.75) / 3)
  assert trust.runs_spread([a, b]) == 0.5
  assert trust.runs_spread([a]) == 0.0 and trust.runs_spread([]) == 0.0


def test_the_runs_spread_widens_the_error_bar_of_choose_and_the_verdict():
  so = _c("source_only", 0.80, 0.0)
  runs = [so, _c("run_1", 0.90, 0.3), _c("run_2", 0.89, 0.3)]
  assert trust.choose(runs, 0.03, spread=0.05)[0] == 2  # 0.09 > 0.03 + 0.05
  index, why = trust.choose(runs, 0.03, spread=0.08)   # 0.10 <= 0.03 + 0.08
  assert index == 0 and "error bar (11.00 points: 3.00 + the runs' spread 8.00" in why
  one = trust.choose([so, _c("run_1", 0.90, 0.3)], trust.gain_error(1))[1]
  assert one.endswith("more than the error bar (5.90 points, the typical error with one "
                      "adapted run)")
  assert trust.gain_error(1) == trust.ONE_RUN_ERROR == 0.059
  assert trust.gain_error(2) == trust.gain_error(3) == trust.ACCURACY_ERROR == 0.0225
  v = trust.verdict(runs, 0, 0.03, spread=0.08)
  assert v["helped"] == "unsure" and v["model"] == "run_1"
  np.testing.assert_allclose(v["interval"], [-0.01, 0.21], atol=1e-9)
  assert trust.error_bar(0.03, 0.08) == pytest.approx(0.11)


def test_too_few_target_images_keep_source_only_and_an_unsure_verdict():
  assert trust.too_few_target_images(10, 10) is None
  why = trust.too_few_target_images(3, 10)
  assert why == ("the target has 3 images for 10 classes, too few for the label-free "
                 "estimates: the source-only model is kept")
  runs = [_c("source_only", 0.50, 0.0), _c("run_1", 0.90, 0.5)]
  assert trust.verdict(runs, 0, 0.03)["helped"] == "likely"
  few = trust.verdict(runs, 0, 0.03, few=True)
  assert few["helped"] == "unsure" and few["interval"] == [-0.5, 0.5]


def test_choose_takes_the_latest_run_the_estimates_cannot_tell_from_the_best():
  so = _c("source_only", 0.80, 0.0)
  runs = [so, _c("run_1", 0.92, 0.2), _c("run_2", 0.90, 0.2)]
  index, why = trust.choose(runs, 0.03)
  assert index == 2 and "the latest run within 3.00 points of the best estimate (run_1" in why
  assert trust.choose(runs, 0.03, rule="best")[0] == 1
  assert trust.choose([so, _c("run_1", 0.95, 0.2), _c("run_2", 0.90, 0.2)], 0.03)[0] == 1
  # the latest run must itself beat source-only by more than the error
  assert trust.choose([so, _c("run_1", 0.85, 0.2), _c("run_2", 0.825, 0.2)], 0.03)[0] == 1


@pytest.mark.parametrize("acc, dis, helped, interval", [
    (0.90, 0.20, "likely", [0.07, 0.13]),
    (0.81, 0.20, "unsure", [-0.02, 0.04]),
    (0.70, 0.20, "unlikely", [-0.13, -0.07]),
    (0.90, 0.05, "likely", [0.05, 0.05]),     # the disagreement bounds any gain
    (0.80, 0.00, "unchanged", [0.0, 0.0])])
def test_verdict_is_the_estimated_gain_and_its_interval(acc, dis, helped, interval):
  v = trust.verdict([_c("source_only", 0.80, 0.0), _c("run_1", acc, dis)], 1, 0.03)
  assert v["helped"] == helped and v["model"] == "run_1" and v["returned"] == "run_1"
  np.testing.assert_allclose(v["interval"], interval, atol=1e-9)
  assert v["estimated_gain"] == pytest.approx(acc - 0.80)


def test_agreement_accuracies_leave_each_model_out_of_its_own_reference():
  eye = np.eye(3)
  a = eye[[0, 0, 1, 2]] * 0.85 + 0.05   # labels 0 0 1 2, rows [0.9 0.05 0.05]
  b = eye[[0, 1, 1, 2]] * 0.4 + 0.2     # labels 0 1 1 2, rows [0.6 0.2 0.2]
  c = eye[[1, 1, 1, 0]] * 0.55 + 0.15   # labels 1 1 1 0, rows [0.7 0.15 0.15]
  # By hand: mean(b, c) -> 1 1 1 0, so a agrees on 1 of 4; mean(a, c) -> 0 0 1 2 (b: 3
  # of 4); mean(a, b) -> 0 0 1 2 (c: 1 of 4).
  np.testing.assert_allclose(trust.agreement_accuracies([a, b, c], leave_one_out=True),
                             [1 / 4, 3 / 4, 1 / 4])
  # With its own vote in the mean, (a + b + c) / 3 -> 0 1 1 2, each reads higher.
  np.testing.assert_allclose(trust.agreement_accuracies([a, b, c]), [3 / 4, 1, 2 / 4])
  # Two candidates: leaving one out would give each the other's agreement (equal by
  # construction), so both keep the mean of the two: (a + b) / 2 -> 0 0 1 2.
  assert (trust.agreement_accuracies([a, b], leave_one_out=True)
          == trust.agreement_accuracies([a, b]) == [1.0, 3 / 4])


def test_the_verdict_can_read_the_returned_model():
  so = _c("source_only", 0.80, 0.0)
  runs = [so, _c("run_1", 0.92, 0.2), _c("run_2", 0.85, 0.2)]
  assert trust.verdict(runs, 2, 0.03, reads="best")["model"] == "run_1"  # best-estimated
  v = trust.verdict(runs, 2, 0.03)  # (the library's: trust.VERDICT_READS)
  assert v["model"] == "run_2" and v["returned"] == "run_2" and v["helped"] == "likely"
  np.testing.assert_allclose(v["interval"], [0.02, 0.08], atol=1e-9)
  # source-only returned: the verdict reads the best-estimated adapted model either way
  assert trust.verdict(runs, 0, 0.03, reads="returned")["model"] == "run_1"


def test_assess_leaves_each_candidate_out_of_its_own_reference():
  held_p, held_y, _ = sample(PI, 300, 20)
  target_p, _, _ = sample(Q, 400, 21)
  runs = [np.roll(target_p, k, axis=1) * 0.5 + target_p * 0.5 for k in (1, 2)]
  out = trust.assess(held_y, PI, [("source_only", held_p, target_p), ("run_1", None, runs[0]),
                                  ("run_2", None, runs[1])], rounds=5)
  models = [target_p] + runs
  for i, c in enumerate(out["candidates"]):
    others = np.mean([m for j, m in enumerate(models) if j != i], axis=0)
    assert c["estimated_accuracy"] == pytest.approx(
        np.mean(models[i].argmax(1) == others.argmax(1)), abs=1e-4)
