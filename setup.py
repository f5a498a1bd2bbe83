"""biwaa_tf: BIWAA unsupervised domain adaptation in TensorFlow/Keras.

Which TensorFlow build is required is chosen by BIWAA_TF_VARIANT at install time:
  cpu (default)  tensorflow-cpu==2.21.0
  cuda           tensorflow[and-cuda]==2.21.0  (GPU users)
  none           no TensorFlow requirement (bring your own build)
See BUILD.md.
"""

import os

from setuptools import find_packages, setup

TF_VERSION = "2.21.0"
_VARIANTS = {
    "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
    "cuda": [f"tensorflow[and-cuda]=={TF_VERSION}"],
    "none": [],
}
variant = os.environ.get("BIWAA_TF_VARIANT", "cpu")
if variant not in _VARIANTS:
  raise SystemExit(f"BIWAA_TF_VARIANT={variant!r}: choose from {sorted(_VARIANTS)}")

setup(
    name="biwaa_tf",
    version="0.1.0",
    description="BIWAA (WACV 2023) unsupervised domain adaptation in TensorFlow/Keras 3",
    packages=find_packages(include=["biwaa_tf", "biwaa_tf.*"]),
    package_data={"biwaa_tf": ["lists/*/*.txt", "lists/README.md"]},
    python_requires=">=3.10",
    install_requires=_VARIANTS[variant] + [
        "keras>=3.10",
        "absl-py>=2.1",
        "numpy>=1.26",
        "tensorboard>=2.20",
        "matplotlib>=3.7",
    ],
    extras_require={
        "demo": ["scikit-learn>=1.4"],
        "hub": ["huggingface_hub>=0.23"],
        "digits": ["scipy>=1.10"],
        "dev": ["scikit-learn>=1.4", "huggingface_hub>=0.23", "pytest>=8", "pytest-xdist>=3.5",
                "ruff>=0.6", "pillow>=10", "scipy>=1.10"],
    },
    entry_points={"console_scripts": ["biwaa-tf=biwaa_tf.main:run"]},
)
