"""BIWAA in TensorFlow/Keras."""
from biwaa_tf import quiet as _quiet
from biwaa_tf import saving as _saving

__version__ = "0.1.0"
# The Python API, imported on first use (`import biwaa_tf` does not load TensorFlow).
_API = {
    "adapt": "biwaa_tf.api", "AdaptResult": "biwaa_tf.api",
    "BIWAAModel": "biwaa_tf.model.biwaa", "MethodConfig": "biwaa_tf.model.biwaa",
    "build_backbone": "biwaa_tf.model.backbones", "register_backbone": "biwaa_tf.model.backbones",
    "ImageOptions": "biwaa_tf.data.preprocess", "from_arrays": "biwaa_tf.data.lists",
    "load_image_list": "biwaa_tf.data.lists", "fit_dataset": "biwaa_tf.data.pipeline",
    "eval_dataset": "biwaa_tf.data.pipeline",
    "BIWAA": "biwaa_tf.estimator", "load": "biwaa_tf.estimator",
}
__all__ = sorted(_API)
# TensorFlow's C++ start-up lines stay off the console (see quiet.py).
_quiet.install()
# keras.models.load_model finds biwaa_tf's classes once Keras is loaded (see saving.py).
_saving.install()


def __getattr__(name):
  if name in _API:
    import importlib
    module = importlib.import_module(_API[name])
    return getattr(module, "register" if name == "register_backbone" else name)
  raise AttributeError(f"module 'biwaa_tf' has no attribute {name!r}")
