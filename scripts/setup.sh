#!/usr/bin/env bash
# The one set-up step of README's commands and of CI.
#
#   bash scripts/setup.sh [--gpu | --cpu] [--python PATH] [--venv DIR] [--with EXTRA]
#   bash scripts/setup.sh --find-python       # print the interpreter it would use, and stop
#   bash scripts/setup.sh --list-pythons      # every supported interpreter found, one per line
#   bash scripts/setup.sh --venv-only         # create the virtual environment (step 1), and stop
#
# Creates a virtual environment (default .venv in the repository), installs the
# dependencies pinned in setup.cfg, builds Horovod 0.28.1 from source with its TensorFlow
# ops and the Gloo controller (and MPI when one is installed), installs Debian's
# dataset-fashion-mnist when it is missing and packages may be installed, then checks the
# result. Idempotent: with everything in place it only re-checks, in seconds.
#
# The interpreter: the pinned TensorFlow (2.17) has wheels for Python 3.9 to 3.12 only. The
# first of --python PATH, python3, python3.12 ... python3.9 on PATH and pyenv's versions that
# is a supported Python with venv is used; failing all, uv (from PyPI) installs a Python 3.12
# where the network allows; otherwise the set-up stops with one line naming the ways out.
#
# --gpu installs tensorflow[and-cuda]==<pin> instead of tensorflow-cpu==<pin> (CUDA and cuDNN
# come as wheels; README names the driver needed). The choice is remembered, so demo.sh and
# test.sh (which pass no options) keep it; --cpu switches back.
# The environment variables FDENOISE_PYTHON and FDENOISE_VENV do what --python and --venv do
# (demo.sh and test.sh pass them through). --with EXTRA also installs an optional extra of
# setup.cfg (onnx: eval.py --export-onnx; test.sh asks for it).
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FDENOISE_VENV:-$ROOT/.venv}"
WANT_PY="${FDENOISE_PYTHON:-}"
FMNIST_DIR="/usr/share/datasets/fashion-mnist"
GPU=""
MODE=setup
EXTRAS=()
# Python versions the pinned stack supports (setup.cfg's python_requires says the same).
PY_MIN=9
PY_MAX=12
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU=1; shift ;;
    --cpu) GPU=0; shift ;;
    --python) [ $# -ge 2 ] || { echo "setup: --python needs a path to an interpreter" >&2; exit 2; }
              WANT_PY="$2"; shift 2 ;;
    --venv) [ $# -ge 2 ] || { echo "setup: --venv needs a directory" >&2; exit 2; }
            VENV="$2"; shift 2 ;;
    --find-python) MODE=find; shift ;;
    --list-pythons) MODE=list; shift ;;
    --venv-only) MODE=venv; shift ;;
    --with) [ $# -ge 2 ] || { echo "setup: --with needs an extra of setup.cfg (onnx)" >&2; exit 2; }
            EXTRAS+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$1' (valid: --gpu, --cpu, --python PATH, --venv DIR, --with EXTRA, --find-python, --list-pythons, --venv-only)" >&2
       exit 2 ;;
  esac
done
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PY="$VENV/bin/python"
STAMP="$VENV/.deps-stamp"

step() { echo "[setup] $*"; }
fail() { echo "[setup] FAILED at step: $*" >&2; exit 1; }

# ---- the interpreter ------------------------------------------------------------------
# "3.12" if $1 runs, is a supported CPython with venv and ensurepip (Debian splits those
# into python3.X-venv), else nothing.
py_version() {
  "$1" - "$PY_MIN" "$PY_MAX" <<'PYEOF' 2>/dev/null
import sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
if sys.version_info[0] == 3 and lo <= sys.version_info[1] <= hi:
    import ensurepip, venv  # noqa: F401  (python3 -m venv needs both)
    print("%d.%d" % sys.version_info[:2])
PYEOF
}

# Every candidate, in order of preference: python3 first (the host's own), then the newest
# supported version on PATH, then pyenv's installs (its shims on PATH only run the versions
# a project selected, so its version directories are looked at directly).
candidates() {
  echo python3
  local m v
  for m in $(seq "$PY_MAX" -1 "$PY_MIN"); do echo "python3.$m"; done
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  for m in $(seq "$PY_MAX" -1 "$PY_MIN"); do
    for v in $(ls -d "$root"/versions/3."$m".* 2>/dev/null | sort -V -r); do
      [ -x "$v/bin/python3" ] && echo "$v/bin/python3"
    done
  done
  return 0
}

# Every supported interpreter found, in order of preference; with "first", only the first.
supported_pythons() {
  local c path
  for c in $(candidates); do
    path="$(command -v "$c" 2>/dev/null || true)"
    [ -n "$path" ] || continue
    if [ -n "$(py_version "$path")" ]; then
      echo "$path"
      [ "${1:-}" != first ] || return 0
    fi
  done
}

# uv installs a managed CPython (a download from python-build-standalone): only where the
# network allows, and bounded in time.
python_from_uv() {
  local any tmp uv out
  any="$(command -v python3 || true)"
  [ -n "$any" ] || return 1
  tmp="$(mktemp -d)"
  step "    no supported Python found: trying uv (from PyPI) to install Python 3.12" >&2
  if "$any" -m venv "$tmp/uv" >/dev/null 2>&1 &&
     timeout 300 "$tmp/uv/bin/python" -m pip install -q uv >/dev/null 2>&1; then
    uv="$tmp/uv/bin/uv"
    if timeout 600 "$uv" python install 3.12 >/dev/null 2>&1; then
      out="$("$uv" python find 3.12 2>/dev/null || true)"
      if [ -n "$out" ] && [ -n "$(py_version "$out")" ]; then rm -rf "$tmp"; echo "$out"; return 0; fi
    fi
  fi
  rm -rf "$tmp"
  return 1
}

no_python_message() {
  local host="none"
  command -v python3 >/dev/null 2>&1 && host="$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo unknown)"
  echo "[setup] FAILED: no Python 3.$PY_MIN-3.$PY_MAX with venv here (python3 is $host; the pinned TensorFlow 2.17, the" \
       "newest Horovod 0.28.1 builds against, has no wheel for newer Pythons): install one (apt-get install" \
       "python3.12-venv, or pyenv install 3.12, or uv python install 3.12), or pass --python /path/to/python3.12" >&2
}

choose_python() {
  if [ -n "$WANT_PY" ]; then
    local path
    path="$(command -v "$WANT_PY" 2>/dev/null || true)"
    [ -n "$path" ] || { echo "[setup] FAILED: --python $WANT_PY: no such interpreter; pass the path of a Python 3.$PY_MIN-3.$PY_MAX" >&2; exit 2; }
    [ -n "$(py_version "$path")" ] || {
      echo "[setup] FAILED: --python $WANT_PY is not a Python 3.$PY_MIN-3.$PY_MAX with venv ($("$path" --version 2>&1 || true)): pass another interpreter" >&2
      exit 2; }
    echo "$path"
    return
  fi
  local first
  first="$(supported_pythons first)"
  if [ -n "$first" ]; then echo "$first"; return; fi
  if [ "${FDENOISE_NO_UV:-0}" != 1 ] && first="$(python_from_uv)"; then echo "$first"; return; fi
  no_python_message
  exit 2
}

if [ "$MODE" = list ]; then supported_pythons; exit 0; fi
if [ "$MODE" = find ]; then choose_python; exit $?; fi

# ---- 1. virtual environment -------------------------------------------------------
# An existing environment is kept unless --python asks for another Python version.
if [ -x "$PY" ] && [ -n "$WANT_PY" ]; then
  BASE="$(choose_python)" || exit 2
  if [ "$(py_version "$BASE")" != "$(py_version "$PY" || true)" ]; then
    step "1/5 $VENV holds Python $("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'), --python asks for $(py_version "$BASE"): recreating it"
    rm -rf "$VENV"
  fi
fi
if [ -x "$PY" ] && [ -z "$(py_version "$PY")" ]; then
  step "1/5 $VENV holds an unsupported Python ($("$PY" --version 2>&1)): recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$PY" ]; then
  BASE="$(choose_python)" || exit 2
  step "1/5 creating virtual environment at $VENV with $BASE (Python $(py_version "$BASE"))"
  "$BASE" -m venv "$VENV" || fail "1/5 venv (is python3.X-venv installed?)"
fi
if [ "$MODE" = venv ]; then step "virtual environment ready: $VENV (Python $(py_version "$PY"))"; exit 0; fi

# pip, quiet unless it fails (then minus the noise of this machine's optional local package folders).
# (Always called as `pip_quiet ... || fail ...`, so set -e does not stop it early.)
pip_quiet() {
  local log rc
  log="$(mktemp)"
  "$PY" -m pip "$@" >"$log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
  return "$rc"
}
# setuptools: horovodrun imports distutils, which Python 3.12 no longer ships (setuptools
# provides it).
if ! "$PY" -c "import setuptools, wheel" 2>/dev/null; then
  pip_quiet install -q --upgrade pip setuptools wheel || fail "1/5 pip upgrade"
fi

if [ -z "$GPU" ]; then
  # No option: keep what an earlier set-up installed (demo.sh and test.sh pass none).
  GPU=0
  if [ -f "$STAMP" ] && grep -q "gpu=1" "$STAMP"; then GPU=1; fi
fi

# ---- 2. pinned Python dependencies -------------------------------------------------
# Only the pins in setup.cfg are the truth; read them from there. Printed as two lines:
# the packages installed with their dependencies, then those installed without (tf-keras:
# its metadata asks for the `tensorflow` package, which would land beside tensorflow-cpu,
# both providing the same module).
pins() {
  "$PY" - "$ROOT/setup.cfg" "$GPU" <<'PYEOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
gpu = sys.argv[2] == "1"
with_deps, no_deps = [], []
for line in cfg["options"]["install_requires"].strip().splitlines():
    line = line.split("#")[0].strip()
    if not line or line.startswith("horovod"):
        continue
    if gpu and line.startswith("tensorflow-cpu"):
        line = line.replace("tensorflow-cpu", "tensorflow[and-cuda]", 1)
    (no_deps if line.startswith("tf-keras") else with_deps).append(line)
print(" ".join(with_deps))
print(" ".join(no_deps))
PYEOF
}
PINS="$(pins)" || fail "2/5 reading setup.cfg"
WITH_DEPS="$(echo "$PINS" | sed -n 1p)"
NO_DEPS="$(echo "$PINS" | sed -n 2p)"
TF_PIN="$(echo "$WITH_DEPS" | tr ' ' '\n' | sed -n 's/^tensorflow[^=]*==//p')"
WANT="$(echo "$WITH_DEPS $NO_DEPS" | tr ' ' '\n' | sort | tr '\n' ' ')gpu=$GPU"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  step "2/5 installing pinned dependencies: $WANT"
  # tensorflow and tensorflow-cpu install the same module: remove the other one first, or
  # uninstalling either later would break both
  OTHER_TF=tensorflow; [ "$GPU" = 1 ] && OTHER_TF=tensorflow-cpu
  if "$PY" -m pip show -q "$OTHER_TF" >/dev/null 2>&1; then
    pip_quiet uninstall -y -q "$OTHER_TF" || fail "2/5 pip uninstall $OTHER_TF"
  fi
  # shellcheck disable=SC2086
  pip_quiet install -q $WITH_DEPS || fail "2/5 pip install of the pinned dependencies"
  # shellcheck disable=SC2086
  [ -z "$NO_DEPS" ] || pip_quiet install -q --no-deps $NO_DEPS || fail "2/5 pip install --no-deps $NO_DEPS"
  echo "$WANT" > "$STAMP"
else
  step "2/5 pinned dependencies already installed"
fi

# optional extras (--with), each pinned in setup.cfg's [options.extras_require]
for extra in ${EXTRAS[@]+"${EXTRAS[@]}"}; do
  EXTRA_PINS="$("$PY" - "$ROOT/setup.cfg" "$extra" <<'PYEOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
extras = cfg["options.extras_require"]
if sys.argv[2] not in extras:
    sys.exit("setup: --with %s: no such extra in setup.cfg (valid: %s)" % (sys.argv[2], ", ".join(extras)))
print(" ".join(line.split("#")[0].strip() for line in extras[sys.argv[2]].strip().splitlines() if line.strip()))
PYEOF
)" || exit 2
  EXTRA_STAMP="$VENV/.extra-$extra-stamp"
  if [ ! -f "$EXTRA_STAMP" ] || [ "$(cat "$EXTRA_STAMP")" != "$EXTRA_PINS" ]; then
    step "2/5 installing the $extra extra: $EXTRA_PINS"
    # shellcheck disable=SC2086
    pip_quiet install -q $EXTRA_PINS "numpy>=1.23,<2" || fail "2/5 pip install of the $extra extra"
    echo "$EXTRA_PINS" > "$EXTRA_STAMP"
  else
    step "2/5 the $extra extra already installed"
  fi
done

# ---- 3. Horovod, built against this TensorFlow ----------------------------------
# On GPU machines with NCCL, Horovod's GPU allreduce should use it (Goyal et al.'s recipe is
# bandwidth-bound on gradients); elsewhere Gloo on host memory.
WANT_NCCL=0
if [ "$GPU" = 1 ] && { [ -n "${HOROVOD_NCCL_HOME:-}" ] || ldconfig -p 2>/dev/null | grep -q 'libnccl\.so'; }; then
  WANT_NCCL=1
fi
# Importing horovod.tensorflow loads its ops library, which fails when it was built against
# another TensorFlow: a changed pin rebuilds it.
horovod_ok() {
  "$PY" -c "import horovod, sys; sys.exit(horovod.__version__ != '0.28.1')" 2>/dev/null &&
  "$PY" -c "import sys, horovod.tensorflow as h; sys.exit(int($WANT_NCCL and not h.nccl_built()))" 2>/dev/null
}
if ! horovod_ok; then
  step "3/5 building horovod==0.28.1 with TensorFlow + Gloo (takes about 3 minutes)"
  MPI_FLAG=HOROVOD_WITHOUT_MPI=1
  if command -v mpicc >/dev/null 2>&1 || command -v mpirun >/dev/null 2>&1; then
    MPI_FLAG=HOROVOD_WITH_MPI=1
    step "    an MPI was found: building the MPI controller too"
  fi
  [ "$WANT_NCCL" = 1 ] && step "    NCCL was found: building GPU allreduce with NCCL"
  # an installed but unusable Horovod (another TensorFlow, no NCCL) must be rebuilt, not kept
  REINSTALL=()
  "$PY" -m pip show -q horovod >/dev/null 2>&1 && REINSTALL=(--force-reinstall --no-deps)
  (
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 "$MPI_FLAG" \
           HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    [ "$WANT_NCCL" = 1 ] && export HOROVOD_GPU_OPERATIONS=NCCL
    # Newer toolchains than Horovod 0.28.1 (June 2023) knew: gcc 13 and later no longer pull
    # <cstdint> and friends in through other standard headers, which some of its sources
    # rely on (fixed upstream after the release), so they are included up front; CMake 4
    # rejects its bundled Gloo's cmake_minimum_required(2.8.12) unless a policy minimum is
    # given. Both are no-ops for the gcc 12 / CMake 3.25 this was first built with.
    export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include stdexcept -include limits -include string"
    export CMAKE_POLICY_VERSION_MINIMUM="${CMAKE_POLICY_VERSION_MINIMUM:-3.5}"
    pip_quiet install -q --no-cache-dir --no-build-isolation ${REINSTALL[@]+"${REINSTALL[@]}"} horovod==0.28.1
  ) || fail "3/5 horovod build (needs cmake and g++; README's section on set-up lists the toolchains tried)"
  horovod_ok || fail "3/5 horovod built but does not import with this TensorFlow$([ "$WANT_NCCL" = 1 ] && echo ' and NCCL')"
else
  step "3/5 horovod 0.28.1 already built"
fi

# ---- 4. this project, editable --------------------------------------------------------
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('core.compat') is None)" 2>/dev/null \
   || [ ! -f "$VENV/.project-stamp" ] || [ "$ROOT/setup.cfg" -nt "$VENV/.project-stamp" ]; then
  step "4/5 installing this project (editable)"
  (cd "$ROOT" && pip_quiet install -q --no-deps --no-build-isolation -e .) || fail "4/5 pip install -e ."
  touch "$VENV/.project-stamp"
else
  step "4/5 project already installed"
fi

# ---- 5. Fashion-MNIST (the embedded default data set) ------------------------------
have_fmnist() {
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$FMNIST_DIR/$f.gz" ] || [ -f "$FMNIST_DIR/$f" ] || return 1
  done
}
if have_fmnist; then
  step "5/5 Fashion-MNIST found in $FMNIST_DIR"
else
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    step "5/5 installing Debian's dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
      || fail "5/5 apt-get install dataset-fashion-mnist"
    have_fmnist || fail "5/5 dataset-fashion-mnist installed but $FMNIST_DIR lacks the four IDX files"
  else
    step "5/5 Fashion-MNIST is not installed and packages cannot be installed here."
    step "    Get the four files {train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz) and pass"
    step "    --data /path/to/that/dir to train.py and eval.py."
  fi
fi

# ---- check ------------------------------------------------------------------------------
step "checking the environment"
"$PY" - "$TF_PIN" <<'PYEOF' || fail "check: imports / versions"
import sys
import core.compat  # the project first: its compatibility module must run before TensorFlow loads
import tensorflow as tf, tensorpack, cv2, numpy, horovod
import horovod.tensorflow as hvd
assert tf.__version__ == sys.argv[1], (tf.__version__, sys.argv[1])
assert tensorpack.__version__.startswith("0.11"), tensorpack.__version__
assert numpy.__version__ < "2", numpy.__version__
assert horovod.__version__ == "0.28.1", horovod.__version__
assert hvd.gloo_built(), "horovod was built without Gloo"
print("[setup] python %s, tensorflow %s, tensorpack %s, numpy %s, opencv %s, horovod %s (gloo=%s, mpi=%s)" % (
    ".".join(map(str, sys.version_info[:3])), tf.__version__, tensorpack.__version__, numpy.__version__,
    cv2.__version__, horovod.__version__, hvd.gloo_built(), hvd.mpi_built()))
# low-precision kernels differ by CPU (oneDNN dispatches on these), so say which CPU this is
import platform, re
try:
    info = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
except (OSError, AttributeError):
    model, flags = platform.processor() or "unknown", set()
wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "f16c"]
print("[setup] cpu: %s; %s" % (model, " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"))
PYEOF
CHECK="$("$VENV/bin/horovodrun" --check-build 2>&1)" || fail "check: horovodrun --check-build"
echo "$CHECK" | grep -q "\[X\] TensorFlow" || { echo "$CHECK"; fail "check: horovodrun --check-build does not list TensorFlow"; }
echo "$CHECK" | grep -q "\[X\] Gloo" || { echo "$CHECK"; fail "check: horovodrun --check-build does not list Gloo"; }
step "ready: $VENV"
