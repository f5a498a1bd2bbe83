"""biwaa_tf on NumPy arrays: BIWAA-I on the built-in digits shift, with the label-shift
check and its verdict (both on by default).

    python examples/numpy_digits.py [--steps=800] [--runs=3]

The arrays could be anything N x H x W x {1,3} (uint8, or float in [0, 1]); here
they are the demo's digits: a labelled source, and a shifted, long-tailed target
whose labels only report accuracy (the training never sees them).
"""

import argparse

import biwaa_tf
from biwaa_tf import trust
from biwaa_tf.data import demo_digits


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=800, help="training steps per run")
  parser.add_argument("--runs", type=int, default=3, help="BIWAA-I's iterative runs")
  args = parser.parse_args()

  x_source, y_source = demo_digits.load_arrays("digits_source")   # (898, 32, 32) uint8
  x_target, y_target = demo_digits.load_arrays("digits_target")   # (450, 32, 32) uint8
  result = biwaa_tf.adapt((x_source, y_source), (x_target, y_target), backbone="lenet",
                          image_size=28, random_flip=False, batch_size=36, lr=0.01,
                          steps_per_run=args.steps, runs=args.runs, verbose=False)
  check = result.label_shift_check  # the source-only probe's estimate, and the path taken
  print(f"source-only   {100 * result.source_only['accuracy']:.2f} %  (the check's probe; "
        f"label shift {'found' if check['shift'] else 'not found'}: "
        f"TV {check['prior_shift']:.2f})")
  for run in result.runs:
    if check["shift"] and run["run"] == 0:
      continue  # run 0 is the probe itself
    print(f"BIWAA run {run['run']}   {100 * run['accuracy']:.2f} %")
  print(f"returned      {100 * result.final_accuracy:.2f} %  (the label-free choice)")
  print(f"verdict: {trust.describe_verdict(result.verdict)}")
  predicted = result.predict(x_target[:8]).argmax(axis=1)
  print(f"first 8 target images: predicted {predicted.tolist()}, true {y_target[:8].tolist()}")


if __name__ == "__main__":
  main()
