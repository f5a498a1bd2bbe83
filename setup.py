"""biwaa_tf: BIWAA unsupervised domain adaptation in TensorFlow/Keras.

The TensorFlow build is an extra, chosen at install time by the user (the metadata is
static: a wheel built once serves CPU and GPU users alike):
  pip install "biwaa_tf[cpu]"    tensorflow-cpu==2.21.0
  pip install "biwaa_tf[cuda]"   tensorflow[and-cuda]==2.21.0  (NVIDIA GPUs, Linux)
  pip install biwaa_tf           no TensorFlow requirement (bring your own build)
See BUILD.md.
"""

from setuptools import find_packages, setup

TF_VERSION = "2.21.0"

setup(
    name="biwaa_tf",
    version="0.1.0",
    description="BIWAA (WACV 2023) unsupervised domain adaptation in TensorFlow/Keras 3",
    packages=find_packages(include=["biwaa_tf", "biwaa_tf.*"]),
    package_data={"biwaa_tf": ["lists/*/*.txt", "lists/README.md"]},
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10",
        "absl-py>=2.1",
        "numpy>=1.26",
        "tensorboard>=2.20",
    ],
    extras_require={
        # Exactly one of these (both provide the `tensorflow` package).
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "cuda": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "demo": ["scikit-learn>=1.4"],
        "hub": ["huggingface_hub>=0.23"],
        "digits": ["scipy>=1.10"],
        # The confusion-matrix PNG (biwaa-tf evaluate), the heatmap and the tools' plots.
        "plots": ["matplotlib>=3.7"],
        # nbclient, nbformat, ipykernel: the tests execute examples/quickstart.ipynb.
        "dev": ["scikit-learn>=1.4", "huggingface_hub>=0.23", "pytest>=8", "pytest-xdist>=3.5",
                "ruff>=0.6", "pillow>=10", "scipy>=1.10", "nbclient>=0.10", "nbformat>=5.9",
                "ipykernel>=6.29", "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["biwaa-tf=biwaa_tf.cli:main"]},
)
