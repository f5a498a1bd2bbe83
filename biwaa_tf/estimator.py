"""A scikit-learn-style estimator around adapt(): what users of ADAPT's
`DANN(...).fit(Xs, ys, Xt)` and skada's estimators know.

    clf = biwaa_tf.BIWAA(backbone="lenet", image_size=28, runs=3).fit(xs, ys, xt)
    clf.predict(xt); clf.predict_proba(xt); clf.score(xt_labelled, yt)
    clf.save("digits.keras"); biwaa_tf.load("digits.keras").predict(xt)

Images: NumPy N x H x W x {1, 3} (uint8, or float in [0, 1]) or tf.data datasets (of
images, or of (image, label) pairs); labels: integers, one-hot rows, or strings (then
`classes_` holds them, in `class_names` order when given, else sorted). Every option
adapt() takes is a constructor keyword (get_params / set_params see them, and refuse a
name that is not an option).

With scikit-learn installed it is a scikit-learn classifier (BaseEstimator,
ClassifierMixin): repr, clone, is_classifier, Pipeline (fit params
`<step>__X_target=`), cross_val_score over source splits (params={"X_target": ...}).
"""

import json
import zipfile

import numpy as np

from biwaa_tf.data import lists
from biwaa_tf.errors import UserError

METADATA = "biwaa_tf.json"  # the estimator's own entry inside the .keras archive
_OWN = ("backbone", "model_dir", "class_names", "verbose")

try:  # scikit-learn's protocol (tags, repr, clone) where it is installed
  from sklearn.base import BaseEstimator, ClassifierMixin
  from sklearn.exceptions import NotFittedError
  _BASES, _NOT_FITTED = (ClassifierMixin, BaseEstimator), (NotFittedError,)
except ImportError:
  _BASES, _NOT_FITTED = (object,), ()


class NotFitted(UserError, *_NOT_FITTED):
  """predict/score/save before fit (scikit-learn's NotFittedError where installed)."""


class BIWAA(*_BASES):
  """BIWAA-I (with the label-shift check and its verdict, as adapt()) as an estimator.

  After fit: `classes_`, `class_names_`, `model_` (raw images -> probabilities, a Keras
  model), `verdict_`, `label_shift_check_`, `result_` (adapt()'s AdaptResult)."""

  def __init__(self, backbone="resnet50", *, model_dir=None, class_names=None,
               verbose=False, **options):
    self.backbone = backbone
    self.model_dir = model_dir
    self.class_names = class_names
    self.verbose = verbose
    _check_option_names(options)
    self._options = dict(options)

  def get_params(self, deep=True):
    del deep
    return {"backbone": self.backbone, "model_dir": self.model_dir,
            "class_names": self.class_names, "verbose": self.verbose, **self._options}

  def set_params(self, **params):
    _check_option_names(params)
    for name, value in params.items():
      if name in _OWN:
        setattr(self, name, value)
      else:
        self._options[name] = value
    return self

  def fit(self, X, y=None, X_target=None, y_target=None, *, callbacks=None):
    """Trains from the labelled source (X, y) to the unlabelled target X_target
    (y_target, optional, only reports accuracy). X may be a dataset of (image, label)
    pairs, then without y."""
    from biwaa_tf import api
    if X_target is None:
      raise UserError("fit(X, y, X_target): the target images are required (unsupervised "
                      "domain adaptation trains on them, without their labels)")
    class_names, string_classes = self.class_names, None
    if y is not None and _is_string_labels(y):
      string_classes = _string_classes(y, class_names)
      y = _encode(y, string_classes, "y")
      y_target = None if y_target is None else _encode(y_target, string_classes, "y_target")
      class_names = list(string_classes)
    source = X if y is None else (X, y)
    target = X_target if y_target is None else (X_target, y_target)
    result = api.adapt(source, target, model_dir=self.model_dir, callbacks=callbacks,
                       backbone=self.backbone, class_names=class_names,
                       verbose=self.verbose, **self._options)
    self.result_ = result
    self._set_fitted(result.model, list(result.class_names), result.verdict,
                     result.label_shift_check, string_classes is not None)
    return self

  def _set_fitted(self, model, class_names, verdict, check, string_labels=False):
    self.model_ = model
    self.class_names_ = list(class_names)
    # The labels fit() was given: strings as they were, else the class indices.
    self.classes_ = (np.array(class_names, dtype=object) if string_labels
                     else np.arange(len(class_names)))
    self.verdict_ = verdict
    self.label_shift_check_ = check

  def _check_fitted(self):
    if not hasattr(self, "model_"):
      raise NotFitted("this BIWAA estimator is not fitted yet: call fit(X, y, X_target) "
                      "or biwaa_tf.load(path) first")

  def predict_proba(self, X, batch_size=64):
    """N x K class probabilities of raw images."""
    self._check_fitted()
    from biwaa_tf import api
    return self.model_.predict(api.unit_images(X, "X"), batch_size=batch_size, verbose=0)

  def predict(self, X, batch_size=64):
    """The label of each image: classes_[argmax] (the class index, or the string label
    fit() was given)."""
    probs = self.predict_proba(X, batch_size)
    return self.classes_[np.argmax(probs, axis=1)]

  def score(self, X, y, sample_weight=None):
    """Accuracy on labelled images (integer, one-hot or string labels)."""
    self._check_fitted()
    if self.classes_.dtype == object:
      labels = _encode(y, self.classes_, "y")
    else:
      labels = lists.integer_labels(y, "y", len(X))
    hits = np.argmax(self.predict_proba(X), axis=1) == labels
    return float(np.average(hits, weights=sample_weight))

  def save(self, path):
    """The inference model as a .keras file (keras.models.load_model reads it after
    `import biwaa_tf`), with the class names and the verdict inside."""
    self._check_fitted()
    if not str(path).endswith(".keras"):
      raise UserError(f"{path}: save to a .keras file")
    self.model_.save(path)
    with zipfile.ZipFile(path, "a") as archive:
      archive.writestr(METADATA, json.dumps({
          "class_names": self.class_names_, "string_labels": self.classes_.dtype == object,
          "verdict": self.verdict_,
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
                        meta["label_shift_check"], meta.get("string_labels", False))
  return estimator


def _check_option_names(names):
  from biwaa_tf import config
  config.check_names(names, known=_OWN)


def _is_string_labels(y):
  y = np.asarray(y)
  return y.ndim == 1 and (y.dtype.kind in "USO")


def _string_classes(y, class_names):
  """The classes of string labels y: class_names' order when given, else sorted."""
  found = sorted({str(v) for v in np.asarray(y)})
  if class_names is None:
    return found
  missing = sorted(set(found) - {str(c) for c in class_names})
  if missing:
    raise UserError(f"y: label(s) {', '.join(missing[:5])} not in class_names")
  return [str(c) for c in class_names]


def _encode(y, classes, name):
  """String labels -> their index in `classes` (one line for a label not there)."""
  index = {str(c): i for i, c in enumerate(classes)}
  y = np.asarray(y)
  unknown = sorted({str(v) for v in y} - set(index))
  if unknown:
    raise UserError(f"{name}: label(s) {', '.join(unknown[:5])} are not among the classes "
                    f"fit() saw ({', '.join(map(str, list(classes)[:5]))}...)")
  return np.array([index[str(v)] for v in y], np.int64)


def _jsonable(params):
  """The parameters that JSON can hold (a Keras-model backbone is kept by name)."""
  out = {}
  for k, v in params.items():
    if isinstance(v, (str, int, float, bool, type(None), list, tuple)):
      out[k] = v
    elif hasattr(v, "name"):
      out[k] = f"keras:{v.name}"
  return out
