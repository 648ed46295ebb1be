"""The set-up's choice of interpreter (scripts/setup.sh): a host whose ``python3`` has no
TensorFlow wheel that Horovod builds against (3.13 and later) must get a supported Python
from elsewhere on the machine, or one line naming the ways out."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO

SETUP = str(REPO / "scripts" / "setup.sh")
SUPPORTED = {(3, m) for m in range(9, 13)}
# the commands setup.sh uses besides the interpreter
TOOLS = ("bash", "seq", "ls", "sort", "mktemp", "rm", "timeout", "sed", "tr", "cat", "grep", "dirname", "id",
         "env", "head")


def _unsupported_python(directory):
    """A real Python 3.13 or later when the machine has one (pyenv's, or on PATH), else a
    stand-in that reports 3.13 and runs nothing, as an interpreter without TensorFlow would."""
    found = [shutil.which("python3.%d" % m) for m in range(13, 16)]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(os.path.join(root, "versions", "3.1[3-9]*", "bin", "python3")))
    for path in filter(None, found):
        try:
            out = subprocess.run([path, "-c", "import sys; print(sys.version_info[1])"], capture_output=True,
                                 text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and int(out.stdout) >= 13:
            return path
    stub = os.path.join(directory, "python3.13-stub")
    with open(stub, "w") as f:
        f.write('#!/bin/sh\ncase "$1" in --version) echo "Python 3.13.0";; '
                '-c) echo "3.13.0";; *) exit 1;; esac\n')
    os.chmod(stub, 0o755)
    return stub


def _bin_with(tmp_path, python):
    """A directory holding ``python3`` -> ``python`` and the tools setup.sh needs, nothing else."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "python3").symlink_to(python)
    for tool in TOOLS:
        path = shutil.which(tool)
        assert path, tool
        (d / tool).symlink_to(path)
    return d


def _setup(args, env, cwd):
    return subprocess.run(["bash", SETUP] + args, env=env, cwd=str(cwd), capture_output=True, text=True,
                          timeout=900)


def _version(python):
    out = subprocess.run([python, "-c", "import sys; print('%d %d' % sys.version_info[:2])"], capture_output=True,
                         text=True, check=True)
    return tuple(int(x) for x in out.stdout.split())


def test_an_unsupported_python3_first_on_path_gets_a_supported_venv(tmp_path):
    """python3 is 3.13 (first on PATH); the set-up looks further (PATH, pyenv) and builds the
    environment with a supported interpreter. The machine running the tests has one (it runs
    them), so this must succeed."""
    bindir = _bin_with(tmp_path, _unsupported_python(str(tmp_path)))
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), FDENOISE_NO_UV="1")
    env.pop("FDENOISE_PYTHON", None)
    venv = tmp_path / "venv"
    out = _setup(["--venv", str(venv), "--venv-only"], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _version(str(venv / "bin" / "python")) in SUPPORTED
    assert "virtual environment ready" in out.stdout


def test_only_an_unsupported_python_stops_with_one_line(tmp_path):
    """Nothing supported anywhere (no pyenv, uv not allowed): exit 2 and one line on stderr
    naming the problem and the ways out, and no environment made."""
    bindir = _bin_with(tmp_path, _unsupported_python(str(tmp_path)))
    env = {"PATH": str(bindir), "HOME": str(tmp_path / "home"), "FDENOISE_NO_UV": "1"}
    venv = tmp_path / "venv"
    out = _setup(["--venv", str(venv)], env, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert "no Python 3.9-3.12" in line and "python3 is 3.13" in line
    for way in ("apt-get install python3.12-venv", "pyenv install 3.12", "uv python install 3.12", "--python"):
        assert way in line
    assert not venv.exists()


def test_explicit_python_of_an_unsupported_version_is_refused(tmp_path):
    unsupported = _unsupported_python(str(tmp_path))
    out = _setup(["--venv", str(tmp_path / "venv"), "--python", unsupported, "--venv-only"], dict(os.environ),
                 tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a Python 3.9-3.12" in lines[0], out.stderr


def test_explicit_python_is_used(tmp_path):
    out = _setup(["--venv", str(tmp_path / "venv"), "--python", sys.executable, "--venv-only"], dict(os.environ),
                 tmp_path)
    assert out.returncode == 0, out.stderr
    assert _version(str(tmp_path / "venv" / "bin" / "python")) == sys.version_info[:2]


@pytest.mark.parametrize("flag", ["--bogus", "--python"])
def test_bad_options_are_refused(tmp_path, flag):
    out = _setup([flag], dict(os.environ), tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
