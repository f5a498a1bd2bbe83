"""Development checks: the README's code blocks, kill-and-resume, the GPU check."""
