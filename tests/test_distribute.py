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


@pytest.fixture(scope="module")
def replica_report():
  res = subprocess.run([sys.executable, "tests/replica_check.py"], cwd=REPO,
                       env=dict(os.environ, **STRICT), capture_output=True, text=True,
                       timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


def test_two_replicas_match_one_device(replica_report):
  r = replica_report
  print(json.dumps(r))  # shown by pytest on failure
  assert r["replicas"] == 2
  # Tolerance: the replicas sum two half-batch gradients where one device sums
  # the whole batch at once, so float32 rounding differs (~1e-7 relative per
  # step); over 20 steps that stays below 1e-5, while a wrongly scaled loss or a
  # per-replica centroid moves these values by > 1e-2 (the weights move by 0.3).
  assert r["loss_max_abs_diff"] < 1e-5
  assert r["weights_max_abs_diff"] < 1e-5
  assert r["weights_moved"] > 0.1 and r["loss_first"] != r["loss_last"]
  # The check can fail: per-replica batch-norm statistics are visibly different.
  assert r["local_bn_loss_max_abs_diff"] > 1e-3
  for name in ("source_centroids", "target_centroids", "agg_table", "agg_seen", "step"):
    assert r[f"{name}_copies"] == 2
    assert r[f"{name}_replica_spread"] == 0.0, name  # identical on both replicas
    assert r[f"{name}_vs_one_device"] < 1e-5, name


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
