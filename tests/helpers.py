"""Shared test utilities: paths and running the project's programs as a user would."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HOROVODRUN = str(Path(PYTHON).parent / "horovodrun")


def run(cmd, timeout=600, env=None, check=True, cwd=REPO):
    """Run a command; on failure show its output in the assertion message."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    proc = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=full_env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and proc.returncode != 0:
        raise AssertionError("command failed (%d): %s\n%s" % (proc.returncode, " ".join(map(str, cmd)),
                                                              proc.stdout[-6000:]))
    return proc


def horovodrun(np_, args, timeout=600, check=True):
    return run([HOROVODRUN, "--gloo", "-np", str(np_), "-H", "localhost:%d" % np_, PYTHON] + list(args),
               timeout=timeout, check=check)
