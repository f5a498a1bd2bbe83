"""The paper's baselines and ablations as flag sets over one code path."""

VARIANTS = {
    "source_only": ["--method=source_only", "--runs=1"],
    "dann": ["--method=dann", "--runs=1"],
    "dann_bg": ["--method=dann", "--feature_weighting", "--runs=1"],
    "biwaa_no_ms": ["--method=biwaa", "--noms_loss", "--runs=1"],
    "biwaa": ["--method=biwaa", "--runs=1"],
    "biwaa_i": ["--method=biwaa"],  # --runs from the task (10) or the suite
    "oracle": ["--method=biwaa", "--balanced_target=oracle", "--runs=1"],
    # Label shift: run 0 source-only, then the source in the estimated target
    # proportions (EM) and the target at random; or only the source-only first run.
    "biwaa_i_pm": ["--method=biwaa", "--prior_matching", "--first_run=source_only"],
    "biwaa_i_so": ["--method=biwaa", "--first_run=source_only"],
}
LABELS = {
    "source_only": "Source only", "dann": "DANN", "dann_bg": "DANN+BG",
    "biwaa_no_ms": "BIWAA w/o MS", "biwaa": "BIWAA", "biwaa_i": "BIWAA-I",
    "oracle": "Oracle loader", "biwaa_i_pm": "BIWAA-I + prior matching",
    "biwaa_i_so": "BIWAA-I, source-only first run",
}
WEIGHTING_PREFIX = "wf"  # wf<lambda>: BIWAA (one run) with --weighting_factor=<lambda>


def variant_flags(name):
  """Flags of a variant name; 'wf6' is the weighting-factor sweep point lambda = 6."""
  if name in VARIANTS:
    return list(VARIANTS[name])
  if name.startswith(WEIGHTING_PREFIX):
    value = float(name[len(WEIGHTING_PREFIX):])
    return ["--method=biwaa", "--runs=1", f"--weighting_factor={value:g}"]
  raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)} or wf<lambda>")


def label(name):
  if name.startswith(WEIGHTING_PREFIX) and name not in LABELS:
    return f"BIWAA lambda={name[len(WEIGHTING_PREFIX):]}"
  return LABELS.get(name, name)
