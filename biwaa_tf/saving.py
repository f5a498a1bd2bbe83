"""biwaa_tf's Keras classes registered as soon as Keras is loaded.

`keras.models.load_model("model.keras")` finds a custom class only in Keras' registry,
which a class joins when its module is imported. `import biwaa_tf` does not load
TensorFlow (the command line's start-up and `--help` stay fast), so `install()` (called
by `import biwaa_tf`) registers the classes once both `tensorflow` and `keras` have
finished importing, whichever of them the user imports first: then

    import biwaa_tf, keras
    keras.models.load_model("digits.keras")

works in a fresh process without importing biwaa_tf's modules by hand.
"""

import importlib.abc
import importlib.util
import logging
import sys

# The modules whose classes carry @keras.saving.register_keras_serializable.
MODULES = ("biwaa_tf.model.layers", "biwaa_tf.model.schedules", "biwaa_tf.model.biwaa",
           "biwaa_tf.export")
_WATCHED = ("tensorflow", "keras")
_done, _finding = set(), set()


def register():
  """Imports the modules that register biwaa_tf's Keras classes (idempotent)."""
  import importlib
  for name in MODULES:
    importlib.import_module(name)


def _loaded(name):
  module = sys.modules.get(name)
  return module is not None and not getattr(getattr(module, "__spec__", None),
                                            "_initializing", False)


def _maybe_register(name):
  _done.add(name)
  if _done.issuperset(_WATCHED):
    _uninstall()
    try:
      register()
    except Exception as e:  # never break the user's `import keras`
      logging.getLogger(__name__).warning(
          "biwaa_tf's Keras classes are not registered (%s); import biwaa_tf.export before "
          "keras.models.load_model", e)


class _Loader(importlib.abc.Loader):
  def __init__(self, loader, name):
    self._loader, self._name = loader, name

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    self._loader.exec_module(module)
    _maybe_register(self._name)


class _Finder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` and `keras` through the other finders, with a loader that
  registers biwaa_tf's classes once both are imported."""

  def find_spec(self, name, path=None, target=None):
    if name not in _WATCHED or name in _done or name in _finding:
      return None
    _finding.add(name)  # another finder may ask the meta path again (quiet.py's does)
    try:
      for finder in list(sys.meta_path):
        if finder is self or not hasattr(finder, "find_spec"):
          continue
        spec = finder.find_spec(name, path, target)
        if spec is not None:
          if spec.loader is not None:
            spec.loader = _Loader(spec.loader, name)
          return spec
      return None
    finally:
      _finding.discard(name)


_FINDER = _Finder()


def install():
  """Registers now if TensorFlow and Keras are loaded, or when they are."""
  for name in _WATCHED:
    if _loaded(name):
      _done.add(name)
  if _done.issuperset(_WATCHED):
    register()
  elif _FINDER not in sys.meta_path:
    sys.meta_path.insert(0, _FINDER)


def _uninstall():
  if _FINDER in sys.meta_path:
    sys.meta_path.remove(_FINDER)
