"""A scikit-learn-style estimator around adapt(): what users of ADAPT's
`DANN(...).fit(Xs, ys, Xt)` and skada's estimators know.

    clf = biwaa_tf.BIWAA(backbone="lenet", image_size=28, runs=3).fit(xs, ys, xt)
    clf.predict(xt); clf.predict_proba(xt); clf.score(xt_labelled, yt)
    clf.save("digits.keras"); biwaa_tf.load("digits.keras").predict(xt)

Images: NumPy N x H x W x {1, 3} (uint8, or float in [0, 1]) or tf.data datasets (of
images, or of (image, label) pairs); labels: integers or one-hot rows. Every option
adapt() takes is a constructor keyword (get_params / set_params see them).
"""

import json
import zipfile

import numpy as np

from biwaa_tf.data import lists
from biwaa_tf.errors import UserError

METADATA = "biwaa_tf.json"  # the estimator's own entry inside the .keras archive


class BIWAA:
  """BIWAA-I (with the label-shift check and its verdict, as adapt()) as an estimator.

  After fit: `classes_`, `class_names_`, `model_` (raw images -> probabilities, a Keras
  model), `verdict_`, `label_shift_check_`, `result_` (adapt()'s AdaptResult)."""

  def __init__(self, backbone="resnet50", *, model_dir=None, class_names=None,
               verbose=False, **options):
    self.backbone = backbone
    self.model_dir = model_dir
    self.class_names = class_names
    self.verbose = verbose
    self.options = dict(options)

  def get_params(self, deep=True):
    del deep
    return {"backbone": self.backbone, "model_dir": self.model_dir,
            "class_names": self.class_names, "verbose": self.verbose, **self.options}

  def set_params(self, **params):
    for name, value in params.items():
      if name in ("backbone", "model_dir", "class_names", "verbose"):
        setattr(self, name, value)
      else:
        self.options[name] = value
    return self

  def fit(self, X, y=None, X_target=None, y_target=None, *, callbacks=None):
    """Trains from the labelled source (X, y) to the unlabelled target X_target
    (y_target, optional, only reports accuracy). X may be a dataset of (image, label)
    pairs, then without y."""
    from biwaa_tf import api
    if X_target is None:
      raise UserError("fit(X, y, X_target): the target images are required (unsupervised "
                      "domain adaptation trains on them, without their labels)")
    source = X if y is None else (X, y)
    target = X_target if y_target is None else (X_target, y_target)
    result = api.adapt(source, target, model_dir=self.model_dir, callbacks=callbacks,
                       backbone=self.backbone, class_names=self.class_names,
                       verbose=self.verbose, **self.options)
    self.result_ = result
    self._set_fitted(result.model, list(result.class_names), result.verdict,
                     result.label_shift_check)
    return self

  def _set_fitted(self, model, class_names, verdict, check):
    self.model_ = model
    self.class_names_ = list(class_names)
    self.classes_ = np.arange(len(class_names))
    self.verdict_ = verdict
    self.label_shift_check_ = check

  def _check_fitted(self):
    if not hasattr(self, "model_"):
      raise UserError("this BIWAA estimator is not fitted yet: call fit(X, y, X_target) "
                      "or biwaa_tf.load(path) first")

  def predict_proba(self, X, batch_size=64):
    """N x K class probabilities of raw images."""
    self._check_fitted()
    return self.model_.predict(lists.as_uint8_rgb(X, "X"), batch_size=batch_size, verbose=0)

  def predict(self, X, batch_size=64):
    """The class index of each image (class_names_[i] names it)."""
    return np.argmax(self.predict_proba(X, batch_size), axis=1)

  def score(self, X, y):
    """Accuracy on labelled images (integer or one-hot labels)."""
    labels = lists.integer_labels(y, "y", len(X))
    return float(np.mean(self.predict(X) == labels))

  def save(self, path):
    """The inference model as a .keras file (keras.models.load_model reads it after
    `import biwaa_tf`), with the class names and the verdict inside."""
    self._check_fitted()
    if not str(path).endswith(".keras"):
      raise UserError(f"{path}: save to a .keras file")
    self.model_.save(path)
    with zipfile.ZipFile(path, "a") as archive:
      archive.writestr(METADATA, json.dumps({
          "class_names": self.class_names_, "verdict": self.verdict_,
          "label_shift_check": self.label_shift_check_, "params": _jsonable(
              self.get_params())}))


def load(path):
  """A fitted BIWAA estimator from BIWAA.save's .keras file (predict, predict_proba,
  score; not fit: the training state is not in it)."""
  import keras

  from biwaa_tf import export  # noqa: F401  (registers the preprocessing layers)
  try:
    with zipfile.ZipFile(path) as archive:
      meta = json.loads(archive.read(METADATA))
  except (OSError, zipfile.BadZipFile, KeyError) as e:
    raise UserError(f"{path}: not a file saved by BIWAA.save ({e})") from None
  estimator = BIWAA(**meta.get("params", {}))
  estimator._set_fitted(keras.models.load_model(path), meta["class_names"], meta["verdict"],
                        meta["label_shift_check"])
  return estimator


def _jsonable(params):
  """The parameters that JSON can hold (a Keras-model backbone is kept by name)."""
  out = {}
  for k, v in params.items():
    if isinstance(v, (str, int, float, bool, type(None), list, tuple)):
      out[k] = v
    elif hasattr(v, "name"):
      out[k] = f"keras:{v.name}"
  return out
