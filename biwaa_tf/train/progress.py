"""Training progress for a terminal (a live bar) and for a log file (a line now and then).

When the output is a terminal, a Keras progress bar redraws one line. Anywhere
else (nohup, a batch scheduler, CI, `> log`), carriage-return redraws would
write every step into the file, so a plain line is printed at every tenth of
the run and at least every `every_seconds`:

  run 0  step  400/800  50%  loss 1.234 loss_cls 0.321 ...  211 img/s  ETA 0:00:40
"""

import statistics
import sys
import time

SHOWN = ("loss", "loss_cls", "loss_adv", "loss_ms", "disc_acc", "pseudo_acc")


def format_duration(seconds):
  seconds = max(0, int(round(seconds)))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(run, step, total, logs, images_per_second, eta_seconds):
  """One log line (pure: no clock, no I/O)."""
  width = len(str(total))
  values = " ".join(f"{k} {logs[k]:.4f}" for k in SHOWN if k in logs)
  speed = "" if images_per_second is None else f"  {images_per_second:.0f} img/s"
  eta = "" if eta_seconds is None else f"  ETA {format_duration(eta_seconds)}"
  return (f"run {run}  step {step:>{width}}/{total}  {100 * step // total:3d}%  "
          f"{values}{speed}{eta}")


def line_due(step, total, last_step, last_time, now, every_seconds):
  """Whether a log line is due: each tenth of the run, the last step, or time passed."""
  if step >= total:
    return True
  tenth = max(1, total // 10)
  return step // tenth > last_step // tenth or now - last_time >= every_seconds


class StepTimer:
  """Wall time per step after the first (which includes tracing)."""

  def __init__(self):
    self.durations = []
    self._last = None

  def tick(self):
    now = time.perf_counter()
    if self._last is not None:
      self.durations.append(now - self._last)
    self._last = now

  @property
  def median(self):
    return statistics.median(self.durations) if self.durations else None

  @property
  def mean(self):
    return statistics.fmean(self.durations) if self.durations else None


class Progress:
  """Progress of one run: `update(step, logs)` after each step."""

  def __init__(self, run, start, total, images_per_step, enabled=True, stream=None,
               interactive=None, every_seconds=60.0):
    self.run, self.total, self.images_per_step = run, total, images_per_step
    self.stream = stream or sys.stdout
    self.enabled = enabled
    self.every_seconds = every_seconds
    if interactive is None:
      interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.interactive = interactive
    self._bar = None
    self._last_step, self._last_time = start, time.perf_counter()
    self._timed_from = None  # (time, step) after the first step (tracing excluded)
    if enabled:
      print(f"run {run}: steps {start} -> {total}", file=self.stream, flush=True)
      if interactive:
        import keras
        self._bar = keras.utils.Progbar(total, verbose=1, stateful_metrics=["lr"])

  def update(self, step, logs):
    now = time.perf_counter()
    if self._timed_from is None:
      self._timed_from = (now, step)
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.update(step, [(k, logs[k]) for k in SHOWN if k in logs])
      return
    if not line_due(step, self.total, self._last_step, self._last_time, now,
                    self.every_seconds):
      return
    rate = eta = None
    t0, s0 = self._timed_from
    if step > s0 and now > t0:
      steps_per_second = (step - s0) / (now - t0)
      rate = steps_per_second * self.images_per_step
      eta = (self.total - step) / steps_per_second
    print(progress_line(self.run, step, self.total, logs, rate, eta), file=self.stream,
          flush=True)
    self._last_step, self._last_time = step, now
