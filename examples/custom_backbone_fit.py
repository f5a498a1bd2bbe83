"""Your own Keras backbone, trained the Keras way: compile(), fit() with callbacks.

    python examples/custom_backbone_fit.py [--steps=600] [--logdir=/tmp/biwaa_fit]

BIWAAModel wraps any Keras backbone that maps images to a feature vector; fit()
runs the BIWAA step on the library's paired dataset (the command line's batches), and
the usual Keras callbacks work: TensorBoard, ModelCheckpoint, TerminateOnNaN,
BackupAndRestore, and your own (it sees each step's losses).
"""

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import biwaa_tf
from biwaa_tf.data import demo_digits


def small_cnn():
  inputs = keras.Input((28, 28, 3))
  x = keras.layers.Conv2D(32, 5, activation="relu")(inputs)
  x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Conv2D(64, 5, activation="relu")(x)
  return keras.Model(inputs, x, name="small_cnn")  # a feature map


class PseudoLabelAccuracy(keras.callbacks.Callback):
  """Your own callback: prints how often the target pseudo-labels are right."""

  def on_epoch_end(self, epoch, logs=None):
    print(f"epoch {epoch}: loss {logs['loss']:.3f}, discriminator accuracy "
          f"{logs['disc_acc']:.2f}, pseudo-label accuracy {logs['pseudo_acc']:.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--logdir", default="/tmp/biwaa_fit")
  args = parser.parse_args()

  x_s, y_s = demo_digits.load_arrays("digits_source")
  x_t, y_t = demo_digits.load_arrays("digits_target")
  source = biwaa_tf.from_arrays("source", x_s, y_s)
  target = biwaa_tf.from_arrays("target", x_t, y_t)  # labels: only for pseudo_acc
  opts = biwaa_tf.ImageOptions(resize_size=32, image_size=28, flip=False, mode="unit",
                               train_crop="random")
  data = biwaa_tf.fit_dataset(source, target, opts, batch_size=36, num_classes=10)

  backbone = keras.Sequential([small_cnn(), keras.layers.Flatten(),
                               keras.layers.Dense(256, activation="relu")])
  model = biwaa_tf.BIWAAModel(backbone, biwaa_tf.MethodConfig(num_classes=10,
                                                              num_target=target.size))
  model.build_all(28)
  model.compile(lr=0.01, steps_per_execution=10)
  epochs = 3
  model.fit(data, epochs=epochs, steps_per_epoch=args.steps // epochs, verbose=0, callbacks=[
      PseudoLabelAccuracy(),
      keras.callbacks.TerminateOnNaN(),
      keras.callbacks.TensorBoard(os.path.join(args.logdir, "tb")),
      keras.callbacks.ModelCheckpoint(os.path.join(args.logdir, "biwaa.weights.h5"),
                                      save_weights_only=True),
  ])
  labelled = tf.data.Dataset.zip(biwaa_tf.eval_dataset(target, opts, 64),
                                 tf.data.Dataset.from_tensor_slices(y_t).batch(64))
  scores = model.evaluate(labelled, verbose=0, return_dict=True)
  probs = model.predict(biwaa_tf.eval_dataset(target, opts, 64), verbose=0)
  print(f"target accuracy {100 * scores['accuracy']:.2f} % "
        f"({int(np.sum(probs.argmax(1) == y_t))} of {len(y_t)})")


if __name__ == "__main__":
  main()
