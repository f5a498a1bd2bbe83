"""The wheel's metadata is static: TensorFlow only through the cpu / cuda extras; the user
commands are one console script, tested as pip installed it."""

import glob
import subprocess
import sys
import zipfile

import numpy as np
from conftest import BIWAA_TF, REPO, write_image


def test_wheel_metadata_names_tensorflow_only_in_extras(tmp_path):
  res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(tmp_path), REPO],
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  wheel = glob.glob(str(tmp_path / "biwaa_tf-*.whl"))[0]
  with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = z.read(name).decode()
    assert any(n.startswith("biwaa_tf/lists/officehome/") for n in z.namelist())
  requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
              if line.startswith("Requires-Dist:")]
  tensorflow = sorted(r for r in requires if r.startswith("tensorflow"))
  assert tensorflow == ['tensorflow-cpu==2.21.0; extra == "cpu"',
                        'tensorflow[and-cuda]==2.21.0; extra == "cuda"'], requires
  assert "keras>=3.10" in requires
  extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Provides-Extra:")}
  assert {"cpu", "cuda", "demo", "dev", "plots"} <= extras
  assert not any(r.startswith("matplotlib") and "extra" not in r for r in requires), requires
  with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "biwaa-tf = biwaa_tf.cli:main" in z.read(name).decode()
    assert "biwaa_tf/commands/predict.py" in z.namelist()
    assert not any(n.startswith("tools/") for n in z.namelist())  # developers' tools stay out


def test_the_installed_command_lists_dispatches_and_refuses(tmp_path):
  """`biwaa-tf` as pip installed it: the command list, a misspelt command, a user command
  end to end (make-list), train's --help by group."""
  res = subprocess.run([BIWAA_TF, "--help"], capture_output=True, text=True, timeout=60)
  assert res.returncode == 0
  for command in ("train", "predict", "evaluate", "make-list", "heatmap", "demo"):
    assert f"\n  {command} " in res.stdout, res.stdout
  res = subprocess.run([BIWAA_TF, "evalute"], capture_output=True, text=True, timeout=60)
  assert res.returncode == 2
  assert res.stderr.strip() == ("error: unknown command 'evalute' (did you mean evaluate?); "
                                "biwaa-tf --help lists them")
  for k, name in enumerate(["cat", "dog"]):
    write_image(str(tmp_path / "dom" / name / "0.png"), np.full((4, 4, 3), 60 * k))
  res = subprocess.run([BIWAA_TF, "make-list", str(tmp_path / "dom"), str(tmp_path / "d.txt")],
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert (tmp_path / "d.txt").read_text() == "dom/cat/0.png 0\ndom/dog/0.png 1\n"
  res = subprocess.run([BIWAA_TF, "train", "--help"], capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 0
  groups = [line for line in res.stdout.splitlines()
            if line.endswith(":") and not line.startswith((" ", "Flags", "usage"))]
  assert groups == ["data:", "model:", "method:", "label shift:", "optimisation:", "runs:",
                    "scale-out:", "output:"], groups
  assert res.stdout.count("\n  --") == 64  # every option, once
