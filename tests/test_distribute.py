"""tf.distribute: 2 logical CPU replicas compute what one device computes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_main, tiny_flags

# One worker runs this module under -n 2 (pyproject: --dist=loadgroup), so its
# module-scoped training fixture runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("distribute")

# These tests compare float32 results of different batch splits at 1e-5. oneDNN
# may pick its matmul kernel (and on some CPUs a reduced-precision one) by the
# shape, so that 8 rows and 16 rows round differently by ~1e-3: these runs use
# TensorFlow's own (Eigen) kernels, which compute every row the same way.
STRICT = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def _replica_check(*args):
  res = subprocess.run([sys.executable, "tests/replica_check.py", *args], cwd=REPO,
                       env=dict(os.environ, **STRICT), capture_output=True, text=True,
                       timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def replica_report():
  return _replica_check()


@pytest.mark.slow
def test_two_replicas_match_one_device(replica_report):
  """Each of 20 steps from the same state on one device and on two replicas (the
  check's docstring says why not a whole trajectory)."""
  r = replica_report
  print(json.dumps(r))  # shown by pytest on failure
  assert r["replicas"] == 2 and r["steps"] == 20
  # Tolerance: the replicas sum two half-batch gradients where one device sums the
  # whole batch at once, so float32 rounding differs: measured 2.4e-7 (loss), 1.2e-7
  # (state), 1.4e-6 (the weights w, 10 times a unit vector). A wrongly scaled loss or
  # per-replica centroids move them by more than 1e-3 (test below).
  assert r["step_loss_max_abs_diff"] < 1e-5
  assert r["step_state_max_abs_diff"] < 1e-5
  assert r["step_weights_w_max_abs_diff"] < 1e-5
  # The steps include the branch points: pseudo-labels from an argmax whose margin came
  # down to 6.7e-4; none flips (a flip is rounding only below a margin of 1e-5).
  assert r["step_pseudo_label_flips"] == 0 or r["min_pseudo_label_margin"] < 1e-5
  assert r["weights_moved"] > 0.1
  # The check can fail: per-replica batch-norm statistics are visibly different.
  assert r["local_bn_step_loss_max_abs_diff"] > 1e-3
  for name in ("source_centroids", "target_centroids", "agg_table", "agg_seen", "step"):
    assert r[f"{name}_copies"] == 2
    assert r[f"{name}_replica_spread"] == 0.0, name  # identical on both replicas
    assert r[f"{name}_step_vs_one_device"] < 1e-5, name


@pytest.mark.slow
@pytest.mark.parametrize("bug, quantity", [
    ("loss_scale", "step_state_max_abs_diff"),
    ("local_centroids", "source_centroids_step_vs_one_device")])
def test_replica_check_catches_an_injected_replica_bug(bug, quantity):
  """Gradients not divided by the replicas, or each replica's centroids from its own
  rows: the per-step check sees them."""
  r = _replica_check(f"inject={bug}")
  print(json.dumps(r))
  assert r["inject"] == bug
  assert r[quantity] > 1e-3  # measured: 0.22 (the weights), 0.83 (the centroids)


@pytest.fixture(scope="module")
def one_device(tiny_domains, tmp_path_factory):
  """The tiny training on one device: what the replicas and the workers must compute.
  --deterministic: without it a training on a loaded machine can drift from its twin."""
  root, src, tgt = tiny_domains
  out = tmp_path_factory.mktemp("one") / "m"
  res = run_main(tiny_flags(root, src, tgt, out, "--deterministic"), env=STRICT)
  assert res.returncode == 0, res.stderr[-2000:]
  return out


def test_cpu_replicas_cli_matches_one_device(tiny_domains, tmp_path, one_device):
  root, src, tgt = tiny_domains
  two = run_main(tiny_flags(root, src, tgt, tmp_path / "two", "--deterministic",
                            "--cpu_replicas=2"), env=STRICT)
  assert two.returncode == 0, two.stderr[-2000:]
  assert "2 replicas: 3 source + 3 target images each" in two.stderr
  a = np.load(one_device / "run_0" / "target_probs.npy")
  b = np.load(tmp_path / "two" / "run_0" / "target_probs.npy")
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision, extra", [
    ("bfloat16", []),
    # float16 on 2 replicas: the shared loss-scale decision is taken across replicas.
    ("float16", ["--cpu_replicas=2"]),
])
def test_mixed_precision_trains_with_finite_losses(tiny_domains, tmp_path, precision, extra):
  root, src, tgt = tiny_domains
  res = run_main(tiny_flags(root, src, tgt, tmp_path / "m", f"--mixed_precision={precision}",
                            "--log_every=1", *extra))
  assert res.returncode == 0, res.stderr[-2000:]
  results = json.loads((tmp_path / "m" / "results.json").read_text())
  assert 0.0 <= results["final_accuracy"] <= 1.0
  probs = np.load(tmp_path / "m" / "run_0" / "target_probs.npy")
  assert np.isfinite(probs).all()
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-2)


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_multi_worker_two_processes_on_localhost(tiny_domains, tmp_path, one_device):
  root, src, tgt = tiny_domains
  ports = [_free_port(), _free_port()]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  args = tiny_flags(root, src, tgt, tmp_path / "mw",
                    "--distribution_strategy=multi_worker_mirrored")
  procs = []
  for index in range(2):
    env = dict(os.environ, **STRICT, TF_CONFIG=json.dumps({"cluster": cluster,
                                                  "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen([sys.executable, "-m", "biwaa_tf.main", *args], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[1][1][-2000:]
  a = np.load(one_device / "run_0" / "target_probs.npy")
  b = np.load(tmp_path / "mw" / "run_0" / "target_probs.npy")
  # The same tolerance as in-process replicas: the collectives sum the same two
  # half-batch gradients (measured here: 2e-9 after these 6 steps, 2e-18 after 30).
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  assert (tmp_path / "mw" / "export").is_dir()  # written once, by the chief
