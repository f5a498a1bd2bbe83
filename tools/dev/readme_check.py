"""Runs the README's code blocks, as CI does: a README whose examples fail fails CI.

    python -m tools.dev.readme_check [--readme=README.md] [--steps=30] [--list]

Every ```bash and ```python block runs; ``` blocks of other kinds (output shown in the
README) are not run. The Python blocks run as one script, in order, at the first one
(a block may use what an earlier one defined, as cells of a notebook do); bash blocks
run command by command, from the repository root, with their training step counts
cut to --steps (`--steps_per_run=N` appended to `biwaa_tf.main` / `biwaa_tf.demo`
commands, `steps_per_run=<n>` rewritten in Python). A block preceded by the line

    <!-- readme-check: skip: <why> -->

is listed with its reason and not run (it needs what CI has not: GPUs, a cluster, the
Office-Home images, internet). The install prefix of the quickstart commands
(`python3 -m venv .venv && . .venv/bin/activate && pip install -e "..." && `) is
what CI has just done and is dropped; the test command is CI's own and is not run
twice. Scratch outputs go to a temporary directory (model_dirs under runs/ are
redirected there). Exit status: 0 when every block that ran succeeded.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = re.compile(r"<!--\s*readme-check:\s*skip:\s*(.*?)\s*-->")
INSTALL = re.compile(r"^python3 -m venv \.venv && \. \.venv/bin/activate && "
                     r"pip install -e \"[^\"]*\" && ")
TEST_COMMAND = "python -m pytest"


def blocks(text):
  """[(line number, language, code, skip reason or None)] of the fenced blocks."""
  found, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    fence = re.match(r"^```(\w*)\s*$", lines[i])
    if not fence:
      i += 1
      continue
    start, language = i, fence.group(1)
    j = i + 1
    while j < len(lines) and not lines[j].startswith("```"):
      j += 1
    before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
    skip = SKIP.search(before)
    found.append((start + 1, language, "\n".join(lines[start + 1:j]),
                  skip.group(1) if skip else None))
    i = j + 1
  return found


def commands(code):
  """The shell commands of a bash block: continuations joined, comments dropped."""
  out, current = [], ""
  for line in code.splitlines():
    if not current and (not line.strip() or line.lstrip().startswith("#")):
      continue
    current += line.rstrip()
    if current.endswith("\\"):
      current = current[:-1] + " "
      continue
    out.append(current.strip())
    current = ""
  return out


def shortened(command, steps, scratch):
  """A command with its training cut to `steps` and its runs/ outputs in `scratch`."""
  command = INSTALL.sub("", command)
  command = re.sub(r"(--model_dir=)runs/", rf"\g<1>{scratch}/runs/", command)
  if re.search(r"-m biwaa_tf\.(main|demo)\b", command):
    command += f" --steps_per_run={steps}"
    if "--model_dir" not in command:  # its own scratch directory, never a user's runs/
      command += f" --model_dir={os.path.join(tempfile.mkdtemp(dir=scratch), 'm')}"
  return command


def run_python(codes, steps, scratch):
  """The README's Python blocks as one script, in order (notebook semantics: a block may
  use what an earlier one defined)."""
  script = "\n".join(re.sub(r"steps_per_run=\d+", f"steps_per_run={steps}", c) for c in codes)
  path = os.path.join(scratch, "readme_blocks.py")
  with open(path, "w", encoding="utf-8") as f:
    f.write(script + "\n")
  res = subprocess.run([sys.executable, path], cwd=scratch, text=True, capture_output=True)
  return res.returncode, (res.stdout + res.stderr)[-3000:]


def run_block(language, code, steps, scratch, log):
  for command in commands(code):
    if command.startswith(TEST_COMMAND) or f"&& {TEST_COMMAND}" in command:
      log(f"    (not run: CI's own test command) {command[:90]}")
      continue
    command = shortened(command, steps, scratch)
    log(f"    $ {command[:150]}")
    res = subprocess.run(["bash", "-c", command], cwd=REPO, text=True, capture_output=True)
    if res.returncode:
      return res.returncode, (res.stdout + res.stderr)[-3000:]
  return 0, None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--readme", default=os.path.join(REPO, "README.md"))
  parser.add_argument("--steps", type=int, default=30, help="training steps per run")
  parser.add_argument("--list", action="store_true", help="list the blocks, run none")
  args = parser.parse_args()
  with open(args.readme, encoding="utf-8") as f:
    found = [b for b in blocks(f.read()) if b[1] in ("bash", "python")]
  scratch = tempfile.mkdtemp(prefix="readme-check-")
  failed = ran = 0
  python_done = False
  try:
    for line, language, code, skip in found:
      head = f"{os.path.basename(args.readme)}:{line} {language}"
      if skip:
        print(f"SKIP {head}: {skip}", flush=True)
        continue
      if args.list:
        print(f"RUN  {head}", flush=True)
        continue
      start = time.time()
      if language == "python":
        if python_done:
          print(f"OK   {head} (ran with the first Python block)", flush=True)
          continue
        python_done = True
        status, detail = run_python([c for _, lang, c, skip in found
                                     if lang == "python" and not skip], args.steps, scratch)
      else:
        status, detail = run_block(language, code, args.steps, scratch,
                                   lambda s: print(s, flush=True))
      ran += 1
      failed += bool(status)
      print(f"{'FAIL' if status else 'OK  '} {head} ({time.time() - start:.0f} s)", flush=True)
      if status or language == "python":
        print(detail, flush=True)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  print(f"readme-check: {ran} block(s) run, {failed} failed")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
