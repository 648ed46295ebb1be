"""Where a result came from: the machine (cores, CPU and the vector instructions that set
TensorFlow's CPU speed, memory, package versions) and the code (git commit). Recorded in
eval.py's JSON and train.py's run.json, and used by the benchmarks and the reproduction
harness."""
import os
import platform
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_fp16")
PACKAGES = ("tensorflow-cpu", "tensorflow", "tf-keras", "tensorpack", "horovod", "numpy", "opencv-python-headless")


def machine_info():
    info = {"python": platform.python_version(), "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
        info["cpu_flags"] = sorted(flags & set(CPU_FLAGS))
        with open("/proc/meminfo") as f:
            info["memory_gb"] = int(re.search(r"MemTotal:\s*(\d+)", f.read()).group(1)) / 2 ** 20
    except (OSError, AttributeError):
        pass
    import importlib.metadata as md
    for pkg in PACKAGES:
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    info["gpus"] = len([d for d in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", d)]) if os.path.isdir("/dev") else 0
    info["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1 (core.compat's default)")
    return info


def machine_label(info=None):
    """This machine in one line: cores, CPU model and the vector instructions that set
    TensorFlow's CPU speed (the same model name comes with and without AVX-512)."""
    info = info or machine_info()
    flags = info.get("cpu_flags")
    gpus = info.get("gpus") or 0
    return "%d-core %s%s, %s" % (info.get("cores") or 0, info.get("cpu", "unknown CPU"),
                                 " (%s)" % " ".join(flags) if flags else "",
                                 "%d NVIDIA GPU%s" % (gpus, "s"[:gpus != 1]) if gpus else "no GPU")


def git_commit(repo=REPO):
    """The short commit of ``repo``, marked when tracked files have uncommitted changes; None
    outside a git checkout."""
    def git(*a):
        try:
            return subprocess.run(["git"] + list(a), cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True).stdout.strip()
        except OSError:
            return ""
    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return commit + (" (with uncommitted changes)" if dirty else "")
