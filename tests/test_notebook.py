"""examples/quickstart.ipynb runs top to bottom, as a user opens it (20 steps a run)."""

import os
import shutil

import nbclient
import nbformat
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # whole trainings: -m slow (CI runs them)


def test_quickstart_notebook_executes(tmp_path):
  notebook = nbformat.read(os.path.join(REPO, "examples", "quickstart.ipynb"), as_version=4)
  shutil.copy(os.path.join(REPO, "examples", "quickstart.ipynb"), tmp_path)
  env = dict(os.environ, QUICKSTART_STEPS="20")
  saved = dict(os.environ)
  os.environ.update(env)  # the kernel inherits the environment
  try:
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(saved)
  outputs = ["".join(o.get("text", "") for o in cell.get("outputs", []))
             for cell in notebook.cells if cell.cell_type == "code"]
  assert "target accuracy" in outputs[1] and "verdict: {'helped'" in outputs[1]
  assert (tmp_path / "quickstart.keras").is_file()
  predicted = outputs[2].strip().splitlines()
  assert predicted[-1].startswith("[") and len(predicted[-1].strip("[]").split()) == 8
  assert "BIWAA(" in outputs[3] and "accuracy" in outputs[3]
