"""BIWAA in TensorFlow/Keras."""
from biwaa_tf import quiet as _quiet

__version__ = "0.1.0"
__all__ = ["adapt", "AdaptResult"]
# TensorFlow's C++ start-up lines stay off the console (see quiet.py).
_quiet.install()


def __getattr__(name):
  # biwaa_tf.adapt without importing TensorFlow at `import biwaa_tf`.
  if name in ("adapt", "AdaptResult"):
    from biwaa_tf import api
    return getattr(api, name)
  raise AttributeError(f"module 'biwaa_tf' has no attribute {name!r}")
