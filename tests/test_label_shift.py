"""Label shift (--prior_matching, --first_run): the EM prior estimate, the source
loader's class proportions, the options' checks, and a run through the CLI."""

import glob
import json
import math
import os

import numpy as np
import pytest
from conftest import run_main, tiny_flags

from biwaa_tf import label_shift
from biwaa_tf import trust as trust_lib
from biwaa_tf.config import TrainConfig, make_config, probes_label_shift, run_config
from biwaa_tf.data import pipeline
from biwaa_tf.errors import UserError

MEANS = np.array([-2.0, 0.0, 2.0])


def gaussian_posteriors(prior_true, prior_train, n, seed=0):
  """Labels drawn from prior_true, x ~ N(mean_y, 1), and the exact Bayes posteriors of a
  classifier trained under prior_train (an independent model of label shift)."""
  rng = np.random.default_rng(seed)
  y = rng.choice(len(MEANS), size=n, p=prior_true)
  x = rng.normal(MEANS[y], 1.0)
  lik = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2)
  post = lik * np.asarray(prior_train)
  return post / post.sum(axis=1, keepdims=True), y


@pytest.mark.parametrize("prior_train", [[1 / 3, 1 / 3, 1 / 3], [0.2, 0.3, 0.5]])
def test_em_recovers_the_target_prior(prior_train):
  truth = np.array([0.7, 0.22, 0.08])
  post, y = gaussian_posteriors(truth, prior_train, 40000)
  estimate = label_shift.em_prior(post, prior_train)
  empirical = np.bincount(y, minlength=3) / len(y)
  np.testing.assert_allclose(estimate, empirical, atol=0.015)
  # The predicted histogram (what balancing by pseudo-labels sees) is far off: the
  # check can fail.
  histogram = np.bincount(post.argmax(1), minlength=3) / len(y)
  assert np.abs(histogram - empirical).max() > 0.04


def test_em_without_shift_stays_at_the_training_prior():
  prior = [0.2, 0.3, 0.5]
  post, y = gaussian_posteriors(prior, prior, 40000, seed=1)
  np.testing.assert_allclose(label_shift.em_prior(post, prior), prior, atol=0.015)


def test_sampling_distribution_floors_rare_classes():
  got = label_shift.sampling_distribution([0.9, 0.1, 0.0, 0.0])
  floor = label_shift.FLOOR_FRACTION / 4
  expected = np.array([0.9, 0.1, floor, floor]) / (1 + 2 * floor)
  np.testing.assert_allclose(got, expected)
  np.testing.assert_allclose(label_shift.sampling_distribution([1, 1, 2]), [0.25, 0.25, 0.5])


def test_source_loaded_in_given_class_proportions():
  labels = np.repeat(np.arange(4), [500, 100, 300, 100])
  wanted = np.array([0.1, 0.6, 0.25, 0.05])
  stream = pipeline.index_stream(labels, seed=3, balance_labels=labels, num_classes=4,
                                 class_distribution=wanted)
  drawn = np.array([int(label) for _, label in stream.take(20000).as_numpy_iterator()])
  np.testing.assert_allclose(np.bincount(drawn, minlength=4) / len(drawn), wanted, atol=0.01)


def test_options_checks_and_run_config():
  base = dict(source="s", target="t", model_dir="m")
  with pytest.raises(UserError, match="--balanced_target: pseudo loads the target"):
    make_config(**base, prior_matching=True, balanced_target="pseudo")
  with pytest.raises(UserError, match="--first_run: source_only needs an adversarial"):
    make_config(**base, method="source_only", first_run="source_only")
  with pytest.raises(UserError, match="--first_run: 'x' is not one of"):
    make_config(**base, first_run="x")
  cfg = make_config(**base, first_run="source_only", runs=3)
  first, later = run_config(cfg, 0), run_config(cfg, 1)
  assert (first.method, first.adversarial, first.feature_weighting, first.ms_loss) == (
      "source_only", False, False, False)
  assert later is cfg and later.ms_loss and later.feature_weighting
  assert run_config(make_config(**base), 0).method == "biwaa"
  assert TrainConfig().prior_matching is False and TrainConfig().first_run == "adapt"


def test_prior_matching_through_the_cli(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  out = tmp_path / "m"
  res = run_main(tiny_flags(root, src, tgt, out, "--runs=3", "--prior_matching",
                            "--first_run=source_only"))
  assert res.returncode == 0, res.stderr[-2000:]
  assert "balanced by labels" not in res.stderr  # the target is loaded at random
  assert "source loaded in the predicted target class proportions" in res.stderr
  runs = json.loads((out / "results.json").read_text())["runs"]
  np.testing.assert_allclose(runs[0]["source_class_distribution"], [1 / 3] * 3, atol=1e-6)
  # Later runs load the source in run 0's predicted class proportions (floored).
  counts = np.bincount(np.load(out / "run_0" / "target_probs.npy").argmax(1), minlength=3)
  expected = np.maximum(counts / counts.sum(), label_shift.FLOOR_FRACTION / 3)
  for run in runs[1:]:
    np.testing.assert_allclose(run["source_class_distribution"], expected / expected.sum(),
                               atol=1e-6)
  # Run 0 trained without the adversarial branch: its TensorBoard logs have no loss_adv.
  assert "train/loss_adv" not in tensorboard_tags(out / "run_0" / "tb")
  assert "train/loss_adv" in tensorboard_tags(out / "run_1" / "tb")


def tensorboard_tags(directory):
  import tensorflow as tf
  tags = set()
  for path in glob.glob(str(directory / "*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_prior_shift_and_decision():
  uniform = [0.25] * 4
  assert label_shift.prior_shift([0.25, 0.25, 0.25, 0.25], uniform) == 0.0
  # 0.5 * (|0.55 - 0.25| + |0.25 - 0.25| + |0.15 - 0.25| + |0.05 - 0.25|) = 0.3
  assert label_shift.prior_shift([55, 25, 15, 5], uniform) == pytest.approx(0.3)
  shifted = label_shift.shift_decision([55, 25, 15, 5], uniform, 0.2)
  assert shifted["shift"] and shifted["path"] == "source_only_first"
  assert shifted["estimated_prior"] == [0.55, 0.25, 0.15, 0.05]
  assert not label_shift.shift_decision([55, 25, 15, 5], uniform, 0.31)["shift"]
  line = label_shift.describe_decision(shifted)
  assert "from 55.0% (class 0) to 5.0% (class 3), 0.30 from the source's" in line
  assert "label shift likely" in line
  assert shifted["prior_matching"] and "--prior_matching" in line
  assert not label_shift.shift_decision([55, 25, 15, 5], uniform, 0.31)["prior_matching"]
  # a label_shift.json written before the rare-classes test still reads
  old = {k: shifted[k] for k in ("estimated_prior", "prior_shift", "threshold", "shift")}
  assert "label shift likely" in label_shift.describe_decision(old)
  assert "--prior_matching" not in label_shift.describe_decision(old)


def test_run_0_confirms_or_overrules_the_probes_shift():
  """A shift the probe finds stands only if the paper's run 0's histogram is more than
  the threshold (TV) from the source's proportions, or if run 0 collapsed."""
  uniform = [0.25] * 4
  probe = label_shift.shift_decision([55, 25, 15, 5], uniform, 0.2)
  assert probe["shift"]
  # 0.5 * (|0.28 - 0.25| + 0 + |0.24 - 0.25| + |0.23 - 0.25|) = 0.03: no shift after all
  # (10,000 predictions in 4 classes: less sampling noise than the reference targets')
  run0 = {"predicted_histogram": [0.28, 0.25, 0.24, 0.23], "eval_images": 10000,
          "source_class_distribution": uniform}
  kept = label_shift.confirm_decision(probe, run0, 0.1)
  assert not kept["shift"] and kept["path"] == "paper" and not kept["prior_matching"]
  assert kept["paper_runs_on_all_source"] and kept["reasons"] == probe["reasons"]
  assert kept["confirmation"] == {"run": "paper_run_0", "estimated_prior":
                                  [0.28, 0.25, 0.24, 0.23], "prior_shift": 0.03,
                                  "images": 10000, "threshold": 0.1, "noise_scale": 1.0,
                                  "effective_threshold": 0.1, "confirmed": False}
  assert probe["shift"] and probe["path"] == "source_only_first"  # not modified
  line = label_shift.describe_decision(kept)
  assert "run 0 predicts proportions 0.030 from the source's (confirms above 0.10)" in line
  assert "not confirmed, no label shift found" in line
  # 0.5 * (0.15 + 0.05 + 0.05 + 0.05) = 0.15 > 0.1: confirmed, the shift path
  run0["predicted_histogram"] = [0.4, 0.2, 0.2, 0.2]
  confirmed = label_shift.confirm_decision(probe, run0, 0.1)
  assert confirmed["shift"] and confirmed["path"] == "source_only_first"
  assert confirmed["prior_matching"] and not confirmed["paper_runs_on_all_source"]
  assert confirmed["confirmation"]["prior_shift"] == pytest.approx(0.15)
  assert "confirmed, label shift likely" in label_shift.describe_decision(confirmed)
  assert not label_shift.confirm_decision(probe, run0, 0.15)["shift"]  # TV > t, strictly
  # the same histogram from 40 predictions: sampling noise alone moves one that far
  few = label_shift.confirm_decision(probe, dict(run0, eval_images=40), 0.1)
  scale = few["confirmation"]["noise_scale"]
  assert scale > 1.5 and not few["shift"]
  assert few["confirmation"]["effective_threshold"] == pytest.approx(0.1 * scale, abs=1e-5)
  assert (f"(confirms above {0.1 * scale:.3f}: 0.10 plus {0.1 * scale - 0.1:.3f} for the "
          "sampling noise of 40 predictions)") in label_shift.describe_decision(few)
  # a collapsed run 0 (the paper's runs fail there) confirms whatever its TV
  run0["predicted_histogram"] = [0.28, 0.25, 0.24, 0.23]
  collapsed = label_shift.confirm_decision(probe, run0, 0.1, collapsed="run 0: collapsed")
  assert collapsed["shift"] and collapsed["confirmation"]["collapsed"] == "run 0: collapsed"
  # a label_shift.json from before the noise scale still reads
  old = dict(kept, confirmation={k: v for k, v in kept["confirmation"].items()
                                 if k not in ("images", "noise_scale", "effective_threshold")})
  assert "(confirms above 0.10)" in label_shift.describe_decision(old)


def test_sampling_noise_against_the_exact_binomial():
  """Two equal classes: the TV of n draws is |X/n - 1/2|, X ~ Binomial(n, 1/2); its 0.99
  quantile from the exact distribution, against the seeded Monte Carlo."""
  n = 100
  pmf = [math.comb(n, x) / 2 ** n for x in range(n + 1)]
  tv = np.abs(np.arange(n + 1) / n - 0.5)
  order = np.argsort(tv, kind="stable")
  cdf = np.cumsum(np.asarray(pmf)[order])
  exact = tv[order][np.searchsorted(cdf, 0.99)]
  assert exact == pytest.approx(0.13)
  assert label_shift.sampling_noise([0.5, 0.5], n) == pytest.approx(exact, abs=0.011)
  assert label_shift.sampling_noise([0.5, 0.5], n) == label_shift.sampling_noise([1, 1], n)
  # the reference targets (10 classes, 9,298 images) and larger ones add nothing; fewer
  # images or more classes add their excess noise (at the default threshold, exactly)
  assert label_shift.confirm_threshold(0.1, [0.1] * 10, 9298) == (0.1, 1.0)
  assert label_shift.confirm_threshold(0.1, [0.1] * 10, 10000) == (0.1, 1.0)
  reference = label_shift.sampling_noise([0.1] * 10, 9298)
  assert reference == pytest.approx(0.0201, abs=0.0005)  # (docs/label_shift.md's figures)
  assert label_shift.confirm_threshold(0.1, [0.1] * 10, 300)[0] == pytest.approx(0.193,
                                                                                 abs=0.001)
  assert label_shift.confirm_threshold(0.1, [0.1] * 10, 1454)[0] == pytest.approx(0.132,
                                                                                  abs=0.001)
  with pytest.raises(ValueError, match="0 images"):
    label_shift.sampling_noise([0.5, 0.5], 0)
  for prior, images in (([0.1] * 10, 300), ([1 / 65] * 65, 2427)):
    t, scale = label_shift.confirm_threshold(0.1, prior, images)
    assert t - 0.1 == pytest.approx(label_shift.sampling_noise(prior, images) - reference)
    assert 1.5 < scale < 2.1 and t == pytest.approx(0.1 * scale)
    # in proportion to the threshold
    assert label_shift.confirm_threshold(0.2, prior, images) == (
        pytest.approx(2 * t), pytest.approx(scale))
  assert TrainConfig().label_shift_confirm_tv == label_shift.REFERENCE_THRESHOLD
  assert label_shift.confirm_threshold(1.0, [0.1] * 10, 300)[0] > 1  # 1: never confirms


def test_shift_path_config_follows_label_shift_json(tmp_path):
  """On a shift the runs train as --first_run=source_only --prior_matching; a training
  whose label_shift.json predates prior matching (no key) resumes with its own loader."""
  from biwaa_tf.train import iterative
  cfg = make_config(source="s", target="t", model_dir=str(tmp_path), runs=3)
  assert iterative.effective_config(cfg, str(tmp_path)) is cfg  # no decision yet
  decision = label_shift.shift_decision([55, 25, 15, 5], [0.25] * 4, 0.2)
  (tmp_path / "label_shift.json").write_text(json.dumps(decision))
  shifted = iterative.effective_config(cfg, str(tmp_path))
  assert (shifted.first_run, shifted.runs, shifted.prior_matching) == ("source_only", 3, True)
  assert shifted.heldout_fraction == 0.05
  assert iterative.target_balance_labels(shifted, None, np.ones((4, 4))) is None  # at random
  del decision["prior_matching"]
  (tmp_path / "label_shift.json").write_text(json.dumps(decision))
  assert not iterative.effective_config(cfg, str(tmp_path)).prior_matching
  # an explicit target loader has no check (it says how to treat label shift itself)
  assert not probes_label_shift(make_config(source="s", target="t", model_dir="m",
                                            balanced_target="pseudo"))
  assert probes_label_shift(cfg)


def test_the_paper_runs_train_on_all_of_the_source_where_no_shift_is_found():
  """No shift (or no decision under multi-worker training): the runs get the source as
  read, in its order, and no held-out split; a shift keeps the split out, and so does a
  label_shift.json from before 77f8a00 (no "paper_runs_on_all_source": its runs may
  have begun with the split out) and an explicit --heldout_fraction without the check."""
  from biwaa_tf.data import lists
  from biwaa_tf.train import iterative
  labels = np.repeat([0, 1, 2], [20, 20, 20])
  source = lists.ImageList("s", tuple(f"{i}.png" for i in range(60)), labels, ("a", "b", "c"))
  train, held, _ = lists.split_heldout(source, 0.05, seed=0)
  domains = lists.Domains(train, source, source, source.class_names, "imagenet", held, source)
  cfg = make_config(source="s", target="t", model_dir="m", runs=3)
  none = label_shift.shift_decision([20, 20, 20], [1 / 3] * 3, 0.3)
  shift = label_shift.shift_decision([55, 4, 1], [1 / 3] * 3, 0.3)
  assert (none["shift"], none["paper_runs_on_all_source"]) == (False, True)
  assert (shift["shift"], shift["paper_runs_on_all_source"]) == (True, False)
  paper = iterative.paper_runs_domains(cfg, domains, none)
  assert paper.source is source and paper.heldout is None and paper.target is source
  assert iterative.paper_runs_domains(cfg, domains, shift) is domains
  older = {k: v for k, v in none.items() if k != "paper_runs_on_all_source"}
  assert iterative.paper_runs_domains(cfg, domains, older) is domains
  assert iterative.paper_runs_domains(cfg, domains, None).source is source  # multi-worker
  explicit = make_config(source="s", target="t", model_dir="m", label_shift_check=False,
                         heldout_fraction=0.05)
  assert iterative.paper_runs_domains(explicit, domains, None) is domains
  plain = lists.Domains(source, source, source, source.class_names, "imagenet")
  assert iterative.paper_runs_domains(cfg, plain, none) is plain  # no split to put back


def test_a_collapsed_probe_is_no_estimate():
  """A probe that predicts (almost) one class for the whole target: no shift path (its
  source would be loaded in one class); the paper's runs follow and the reason is kept."""
  from biwaa_tf.train import iterative
  cfg = make_config(source="s", target="t", model_dir="m")
  result = {"predicted_histogram": [0.995, 0.005, 0.0, 0.0], "eval_images": 400,
            "source_class_distribution": [0.25] * 4}
  decision = iterative.probe_decision(cfg, result)
  assert not decision["shift"] and decision["path"] == "paper"
  assert not decision["prior_matching"] and decision["reasons"] == []
  assert decision["prior_shift"] == pytest.approx(0.745)  # recorded as measured
  assert "class 0: 99.5%" in decision["probe_collapsed"]
  line = label_shift.describe_decision(decision)
  assert "not an estimate" in line and "paper's BIWAA-I runs follow" in line
  # just below the collapse limit the histogram is an estimate: a shift
  result["predicted_histogram"] = [0.98, 0.02, 0.0, 0.0]
  decision = iterative.probe_decision(cfg, result)
  assert decision["shift"] and "probe_collapsed" not in decision
  # too few target images to call a collapse (collapse_message's floor): an estimate
  result.update(predicted_histogram=[1.0, 0.0, 0.0, 0.0], eval_images=5)
  assert iterative.probe_decision(cfg, result)["shift"]


def test_rare_classes_against_a_direct_computation():
  # 6 classes, uniform source: ceil(0.3 * 6) = 2 rarest classes, 4 and 5
  classes, share = label_shift.rare_classes([40, 30, 20, 5, 3, 2], [1] * 6)
  assert classes == [4, 5] and share == pytest.approx((0.03 + 0.02) / (2 / 6))
  # non-uniform source: ranked by predicted over source share (1, 1.8, 0.2)
  classes, share = label_shift.rare_classes([0.5, 0.45, 0.05], [0.5, 0.25, 0.25])
  assert classes == [2] and share == pytest.approx(0.05 / 0.25)
  # the ranking is by the ratio, not the predicted share: class 0 is predicted least but
  # gets twice its source share; class 1 (first of the tie at 0.4 / 0.45) is the rarest
  classes, share = label_shift.rare_classes([0.2, 0.4, 0.4], [0.1, 0.45, 0.45])
  assert classes == [1] and share == pytest.approx(0.4 / 0.45)
  # no shift: the rarest classes get their whole share
  assert label_shift.rare_classes([1] * 10, [1] * 10)[1] == pytest.approx(1.0)


def test_a_partial_target_is_found_by_its_rare_classes():
  # 3 of 10 classes all but absent: the TV is under the threshold, the rare share is not
  probe = np.array([0.14] * 7 + [0.005, 0.003, 0.002])
  probe = probe / probe.sum()
  tv = 0.5 * np.abs(probe - 0.1).sum()
  assert tv < 0.3
  decision = label_shift.shift_decision(probe, [0.1] * 10, 0.3, 0.2)
  assert decision["shift"] and decision["rare_classes"] == [7, 8, 9]
  assert decision["rare_share"] == pytest.approx(probe[7:].sum() / 0.3, abs=1e-6)
  assert decision["reasons"] == [f"rare classes {decision['rare_share']:.2f} < 0.20"]
  assert not label_shift.shift_decision(probe, [0.1] * 10, 0.3, 0.0)["shift"]  # test off
  assert "3 least-predicted classes get 0.03 of their source share" in (
      label_shift.describe_decision(decision))


def posteriors(pred, confidence):
  p = np.full((len(pred), 3), (1 - confidence) / 2)
  p[np.arange(len(pred)), pred] = confidence
  return p


@pytest.mark.parametrize("shift, final_scores, helped", [
    (True, {"snd_score": 2.0, "mean_entropy": 0.1}, "likely"),     # SND up, entropy down
    (True, {"snd_score": 1.0, "mean_entropy": 0.3}, "unlikely"),   # both worse
    (True, {"snd_score": 2.0, "mean_entropy": 0.3}, "unsure"),     # they disagree
    (False, {"im_score": 0.9, "mean_entropy": 0.1}, "likely"),     # the regime's scores
    (False, {"im_score": 0.5, "mean_entropy": 0.1}, "unsure")])
def test_verdict_reads_the_regimes_scores(shift, final_scores, helped):
  reference = {"snd_score": 1.5, "im_score": 0.7, "mean_entropy": 0.2,
               "predicted_histogram": [0.5, 0.3, 0.2]}
  final = dict(final_scores, predicted_histogram=[0.4, 0.3, 0.3])
  ref_pred = np.array([0] * 5 + [1] * 3 + [2] * 2)
  fin_pred = np.array([0] * 4 + [1] * 3 + [2] * 3)
  v = label_shift.verdict(reference, final, posteriors(ref_pred, 0.8),
                          posteriors(fin_pred, 0.9), shift)
  assert v["helped"] == helped
  assert v["evidence"]["agreement_with_source_only"] == 0.8
  assert v["evidence"]["histogram_change"] == pytest.approx(0.1)
  assert v["evidence"]["label_shift_found"] is shift
  assert "verdict: adaptation" in label_shift.describe_verdict(v)
  same = label_shift.verdict(reference, final, posteriors(ref_pred, 0.8),
                             posteriors(ref_pred, 0.9), shift)
  assert same["helped"] == "unchanged"


def results_and_probs(out, runs):
  summary = json.loads((out / "results.json").read_text())
  return summary, [np.load(out / f"run_{r}" / "target_probs.npy") for r in range(runs)]


SHIFT_PATH = ["--nolabel_shift_check", "--heldout_fraction=0.05", "--first_run=source_only",
              "--prior_matching"]  # the adapted runs from the probe, the split kept out


@pytest.mark.slow
@pytest.mark.parametrize("threshold, confirm, reference_flags", [
    # no shift found: exactly the paper's runs, on all of the source (only the probe leaves
    # the 5% held-out split out); on a shift the adapted runs leave it out too
    ("1", "0.1", ["--nolabel_shift_check"]),
    ("0", "0", SHIFT_PATH),  # the probe alone decides: a shift
    # the probe finds a shift, the paper's run 0 does not confirm it: the paper's runs
    ("0", "1", ["--nolabel_shift_check"]),
    # ... or confirms it (any TV above 1e-9): the shift path, run 0 kept aside
    ("0", "0.000000001", SHIFT_PATH)])
def test_check_trains_exactly_one_of_the_two_paths(tiny_domains, tmp_path, threshold, confirm,
                                                   reference_flags):
  root, src, tgt = tiny_domains
  common = ["--runs=2", "--deterministic", "--steps_per_run=4", "--checkpoint_every=2"]
  out, ref = tmp_path / "check", tmp_path / "reference"
  res = run_main(tiny_flags(root, src, tgt, out, *common, "--label_shift_check",
                            f"--label_shift_threshold={threshold}",
                            # the rare-classes test off with the TV test, on with it
                            f"--label_shift_rare_share={1 - int(threshold)}",
                            f"--label_shift_confirm_tv={confirm}"))
  assert res.returncode == 0, res.stderr[-2000:]
  assert run_main(tiny_flags(root, src, tgt, ref, *common, *reference_flags)).returncode == 0
  summary, probs = results_and_probs(out, 2)
  _, expected = results_and_probs(ref, 2)
  for got, want in zip(probs, expected):
    np.testing.assert_array_equal(got, want)  # bit for bit
  decision = json.loads((out / "label_shift.json").read_text())
  assert summary["label_shift_check"] == decision
  confirming = threshold == "0" and confirm != "0"
  assert (out / "paper_run_0").exists() is confirming
  assert ("confirmation" in decision) is confirming
  assert decision["shift"] is (threshold == "0" and confirm != "1")
  if confirming:  # the paper's run 0 trained on all of the source, its outputs on file
    assert "the paper's run 0 trains next" in res.stderr
    tv = decision["confirmation"]["prior_shift"]
    assert decision["confirmation"]["confirmed"] is decision["shift"] and tv > 1e-9
    assert not (out / "paper_run_0" / "heldout_probs.npy").exists()  # trained on them
    assert [r["run"] for r in summary["runs"]] == [0, 1]
    if not decision["shift"]:  # it is the paper path's run 0: copied, not trained again
      assert os.path.samefile(out / "paper_run_0" / "target_probs.npy",
                              out / "run_0" / "target_probs.npy")
      assert res.stderr.count("run 0: median step") == 2  # the probe and paper_run_0
      assert "not confirmed, no label shift found" in res.stderr
      assert "the paper's run 0, trained by the label-shift check" in res.stderr
  probe = np.load(out / "source_only" / "target_probs.npy")
  if decision["shift"]:  # run 0 is the probe itself; run 1 loads the source in its proportions
    np.testing.assert_array_equal(probs[0], probe)
    assert "label shift likely" in res.stderr
    counts = np.bincount(probe.argmax(1), minlength=3)
    expected = np.maximum(counts / counts.sum(), label_shift.FLOOR_FRACTION / 3)
    np.testing.assert_allclose(summary["runs"][1]["source_class_distribution"],
                               expected / expected.sum(), atol=1e-6)
  else:
    assert "no label shift found" in res.stderr and "train/loss_adv" in tensorboard_tags(
        out / "run_0" / "tb")
  assert "train/loss_adv" not in tensorboard_tags(out / "source_only" / "tb")
  assert summary["verdict"]["helped"] in ("likely", "unlikely", "unsure", "unchanged")
  assert "verdict: adaptation" in res.stderr
  assert summary["source_only"]["accuracy"] == json.loads(
      (out / "source_only" / "run_result.json").read_text())["accuracy"]
  # The held-out source split: one image of each class (8 each: round(0.4) -> at least 1),
  # never trained on by the probe (nor by the runs on a shift); their outputs on it saved.
  assert "source " in res.stderr and ": 21 images;" in res.stderr
  trust = summary["trust"]
  assert trust["heldout_images"] == 3 and trust["heldout_fraction"] == 0.05
  np.testing.assert_array_equal(np.load(out / "heldout_labels.npy"), [0, 1, 2])
  assert np.load(out / "source_only" / "heldout_probs.npy").shape == (3, 3)
  for d in ("run_0", "run_1"):  # the paper's runs trained on the split: no held-out outputs
    assert (out / d / "heldout_probs.npy").exists() is decision["shift"]
  if not decision["shift"]:
    assert "the paper's runs train on all 24 source images" in res.stderr
    assert [c["heldout_accuracy"] for c in trust["candidates"]][1:] == [None, None]
    assert trust["candidates"][0]["atc_accuracy"] is not None
  assert sum(trust["prior"]["estimate"]) == pytest.approx(1, abs=1e-3)
  # (on the label-shift path run 0 is the probe: not a candidate of its own)
  assert [c["name"] for c in trust["candidates"]] == (
      ["source_only", "run_1"] if decision["shift"] else ["source_only", "run_0", "run_1"])
  # the error bar: the typical error plus the adapted candidates' mean pairwise disagreement
  adapted = [np.load(out / c["name"] / "target_probs.npy") for c in trust["candidates"][1:]]
  spread = (np.mean(adapted[0].argmax(1) != adapted[1].argmax(1)) if len(adapted) == 2
            else 0.0)
  assert trust["runs_spread"] == pytest.approx(spread, abs=1e-4)
  # (one adapted candidate: the typical error of a training with one, and no spread)
  error = trust_lib.ONE_RUN_ERROR if len(adapted) == 1 else trust_lib.ACCURACY_ERROR
  assert trust["gain_error_bar"] == pytest.approx(error + spread, abs=1e-4)
  returned = summary["returned"]
  assert returned["model"] in [c["name"] for c in trust["candidates"]]
  assert f"returned model: {returned['model']}" in res.stderr
  assert summary["verdict"]["returned"] == returned["model"]


def test_check_with_one_run_adapts_once_after_the_probe(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  out = tmp_path / "m"
  # (the probe alone decides: a 19-image target's sampling noise would keep run 0 from
  # confirming the shift)
  flags = tiny_flags(root, src, tgt, out, "--label_shift_check", "--label_shift_threshold=0",
                     "--label_shift_confirm_tv=0", "--steps_per_run=2")
  assert run_main(flags).returncode == 0
  summary = json.loads((out / "results.json").read_text())
  assert [r["run"] for r in summary["runs"]] == [0, 1]
  again = run_main(flags)  # resumes: nothing trained, the same path
  assert again.returncode == 0 and "run 0: the source-only probe" in again.stderr
  assert "median step" not in again.stderr
  assert "exported the" not in again.stderr  # the same returned model: export/ stands
  # a results.json whose returned model differs (as under an older rule): re-exported
  returned = summary["returned"]["model"]
  summary["returned"]["model"] = "run_1" if returned == "source_only" else "source_only"
  (out / "results.json").write_text(json.dumps(summary))
  third = run_main(flags)
  assert third.returncode == 0 and f"exported the {returned} model" in third.stderr
  assert json.loads((out / "results.json").read_text())["returned"]["model"] == returned
  from biwaa_tf.train import iterative
  cfg, _, model = iterative.restore_trained(str(out))
  assert (cfg.first_run, cfg.runs, cfg.prior_matching) == ("source_only", 2, True)
