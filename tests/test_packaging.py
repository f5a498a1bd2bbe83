"""The wheel's metadata is static: TensorFlow only through the cpu / cuda extras."""

import glob
import subprocess
import sys
import zipfile

from conftest import REPO


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
  assert {"cpu", "cuda", "demo", "dev"} <= extras
