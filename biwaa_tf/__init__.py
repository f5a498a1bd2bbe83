"""BIWAA in TensorFlow/Keras."""
from biwaa_tf import quiet as _quiet

__version__ = "0.1.0"
# TensorFlow's C++ start-up lines stay off the console (see quiet.py).
_quiet.install()
