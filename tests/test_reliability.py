"""Bad input gets one clear line, faults lose nothing, untrusted files are safe.

Every case of docs/RELIABILITY.md that is not already shown elsewhere (the table names the
test of each). The programs run as a user runs them, in subprocesses; corrupt inputs are
generated here; faults are real signals and real failed writes, placed at known moments
with the fault injection of training/faults.py (FDENOISE_FAULT) so nothing depends on
timing luck. Networks are S14 with width 4, a few steps per epoch."""
import io
import json
import os
import re
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

from model import checkpoint
from helpers import HOROVODRUN, PYTHON, REPO, horovodrun, run

TINY = ["--arch", "S14", "--width", "4", "--attack-iter", "1", "--steps-per-epoch", "3", "--eval-attack-iters", "0",
        "--eval-long-attack-iter", "0", "--eval-batch", "16", "--seed", "1"]
FAKE_TRAIN = [PYTHON, REPO / "train.py", "--fake", "--batch", "8"] + TINY


def run_split(cmd, env=None, timeout=300):
    """Run a command with stdout and stderr apart (FDENOISE_FAULT only when given)."""
    full_env = {k: v for k, v in os.environ.items() if k != "FDENOISE_FAULT"}
    full_env.update(TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([str(c) for c in cmd], cwd=str(REPO), env=full_env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def error_lines(proc, prog):
    return [x for x in (proc.stdout + "\n" + proc.stderr).splitlines() if x.startswith(prog + ": error:")]


def assert_one_line_error(proc, prog, *words, code=2):
    """Exit ``code``, stderr exactly one line (the error), every word in it, no traceback."""
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:], proc.stdout[-3000:])
    assert len(lines) == 1 and lines[0].startswith(prog + ": error: "), proc.stderr[-3000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def metrics(logdir):
    return [json.loads(x) for x in (logdir / "metrics.jsonl").read_text().splitlines()]


def global_step(prefix):
    return int(tf.train.load_checkpoint(str(prefix)).get_tensor("global_step"))


def read_every_tensor(prefix):
    """Reads every tensor (TensorFlow checks each one's CRC32C): the checkpoint is loadable."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.fixture
def spawn():
    """subprocess.Popen in a session of its own; whatever is still running when the test ends
    (a failed assertion before the signal, a stalled rank) is killed with its children."""
    started = []

    def start(*args, **kwargs):
        proc = subprocess.Popen(*args, start_new_session=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # the group: ranks outlive a killed horovodrun
        except ProcessLookupError:
            pass
        proc.communicate()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 2-epoch run: checkpoints model-3 and model-6, model-final.npz."""
    logdir = tmp_path_factory.mktemp("tiny") / "run"
    run(FAKE_TRAIN + ["--epochs", "2", "--logdir", logdir])
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 6
    return logdir


def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    state = (dst / "checkpoint").read_text().replace(str(src), str(dst))
    (dst / "checkpoint").write_text(state)
    return dst


# ------------------------------------------------------------------------------- flags

@pytest.mark.parametrize("prog, args, words", [
    ("train.py", ["--attack-epsilon", "-1"], ["--attack-epsilon", "must be a finite number >= 0"]),
    ("train.py", ["--attack-iter", "-3"], ["--attack-iter", "must be >= 0"]),
    ("eval.py", ["--load", "m.npz", "--attack-iter", "10,-5"], ["--attack-iter", "iteration counts >= 0"]),
    ("train.py", ["--fake", "--attack-epsilon", "16", "--attack-step-size", "20"],
     ["--attack-step-size 20 is larger than --attack-epsilon 16", "pass a step <= 16"]),
    ("train.py", ["--fake", "--attack-epsilon", "2"],
     ["--attack-epsilon 2 is smaller than the default attack step 2.55", "--attack-step-size <= 2"]),
    ("train.py", ["--batch", "0"], ["--batch", "must be >= 1"]),
    ("eval.py", ["--load", "m.npz", "--batch", "-4"], ["--batch", "must be >= 1"]),
    ("eval.py", ["--load", "m.npz", "--denoise-query-block", "-1"], ["--denoise-query-block", "must be >= 0"]),
    ("eval.py", ["--load", "m.npz", "--seed", "2147483648"], ["--seed", "must be < 2^31"]),
    ("train.py", ["--fake", "--arch", "R34x"], ["unknown architecture 'R34x'", "valid: R50"]),
    ("train.py", ["--denoise", "gaussian"], ["--denoise", "invalid choice: 'gaussian'", "nonlocal"]),
    ("train.py", ["--fake", "--batch", "8", "--total-batch", "16"], ["--total-batch", "pass only one"]),
    ("train.py", ["--fake", "--attack-loss-scale", "512"], ["--attack-loss-scale applies to fp16 attacks only",
                                                            "--attack-precision fp16"]),
], ids=["negative-epsilon", "negative-iterations", "negative-iterations-eval", "step-above-epsilon",
        "default-step-above-epsilon", "batch-0", "batch-negative-eval", "negative-query-block", "seed-too-large",
        "unknown-arch", "unknown-denoise-op",
        "batch-and-total-batch", "loss-scale-without-fp16"])
def test_a_bad_flag_gives_one_line_naming_the_problem_and_the_fix(tmp_path, prog, args, words):
    """One line, exit 2, and nothing started: no log directory (train.py) or result file."""
    out = ["--logdir", tmp_path / "l"] if prog == "train.py" else ["--json-out", tmp_path / "l"]
    proc = run_split([PYTHON, REPO / prog] + args + out)
    assert_one_line_error(proc, prog, *words)
    assert not (tmp_path / "l").exists()


def test_the_step_rule_never_exceeds_epsilon_for_a_valid_step():
    """Why "a step larger than epsilon" means the step flag: the step used is max(step,
    epsilon/iterations) (Sec. 6.1), which exceeds epsilon only when the step does."""
    from attacks import PIXEL_SCALE, make_attacker
    for iters in (1, 2, 10, 100):
        for step in (0.5, 1.0, 16.0):
            attacker = make_attacker("pgd", num_iter=iters, epsilon=16.0, step_size=step)
            assert attacker.step / PIXEL_SCALE <= 16.0 + 1e-9
    assert make_attacker("pgd", num_iter=10, epsilon=16.0, step_size=1.0).step / PIXEL_SCALE == pytest.approx(1.6)


@pytest.mark.horovod
def test_a_total_batch_that_does_not_divide_across_ranks(tmp_path):
    """train.py's --batch is per worker; --total-batch (the paper's 4096 = 128 x 32) must
    divide by the number of ranks. Under horovodrun every rank says so in one line."""
    proc = run([HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", PYTHON, REPO / "train.py", "--fake",
                "--total-batch", "9", "--logdir", tmp_path / "l"] + TINY, check=False, timeout=300)
    assert proc.returncode != 0
    for rank in (0, 1):
        lines = [x for x in proc.stdout.splitlines() if x.startswith("[%d]<stderr>:train.py: error:" % rank)]
        assert len(lines) == 1, proc.stdout[-3000:]
        assert "--total-batch 9 does not divide across 2 workers: pass a multiple of 2 (8 or 10)" in lines[0]
    assert not re.search(r"^\[\d\]<stderr>:Traceback", proc.stdout, re.M)   # no traceback from train.py


# ------------------------------------------------------------------------------- data

def _write_idx(path, array, magic):
    import gzip
    import struct
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    with gzip.open(str(path), "wb") as f:
        f.write(raw)


def _fashion_dir(root, images_magic=0x803, cut=0):
    root.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        x = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        _write_idx(root / ("%s-images-idx3-ubyte.gz" % prefix), x, images_magic)
        _write_idx(root / ("%s-labels-idx1-ubyte.gz" % prefix), (np.arange(n) % 10).astype(np.uint8), 0x801)
    if cut:
        import gzip
        path = root / "train-images-idx3-ubyte.gz"
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[:-cut]))
    return root


def _imagenet_without_val_txt(root):
    (root / "val").mkdir(parents=True)
    cv2.imwrite(str(root / "val" / "ILSVRC2012_val_00000001.JPEG"), np.zeros((8, 8, 3), np.uint8))
    return root


def _imagenet_val_txt_naming_a_missing_file(root):
    (root / "val").mkdir(parents=True)
    cv2.imwrite(str(root / "val" / "a.JPEG"), np.zeros((8, 8, 3), np.uint8))
    (root / "val.txt").write_text("a.JPEG 0\nb.JPEG 1\n")
    (root / "synset_words.txt").write_text("n01 one\nn02 two\n")
    return root


@pytest.mark.parametrize("prog, make, words", [
    ("train.py", lambda d: d / "absent", ["does not exist", "--data"]),
    ("eval.py", lambda d: (d / "empty").mkdir() or d / "empty", ["neither a Fashion-MNIST", "pass --data DIR"]),
    ("train.py", lambda d: _imagenet_without_val_txt(d / "in"),
     ["has neither class subdirectories", "val.txt", "point --data at the ImageNet root"]),
    ("eval.py", lambda d: _imagenet_val_txt_naming_a_missing_file(d / "in"),
     ["names 1 file(s) that do not exist", "b.JPEG (line 2)", "restore the files or fix the list"]),
    ("train.py", lambda d: _fashion_dir(d / "fm", cut=100), ["truncated", "train-images-idx3-ubyte.gz",
                                                            "dataset-fashion-mnist"]),
    ("eval.py", lambda d: _fashion_dir(d / "fm", images_magic=0x801), ["magic 0x801, expected 0x803",
                                                                       "dataset-fashion-mnist"]),
], ids=["missing-dir", "empty-dir", "imagenet-flat-val-without-val-txt", "val-txt-names-missing-file",
        "idx-truncated", "idx-wrong-magic"])
def test_bad_data_gives_one_line_naming_the_problem_and_the_fix(tiny_run, tmp_path, prog, make, words):
    data = make(tmp_path)
    args = ["--data", data, "--limit", "8"] if prog == "eval.py" else ["--data", data, "--logdir", tmp_path / "l"]
    extra = ["--load", tiny_run / "model-final.npz", "--attack-iter", "0"] if prog == "eval.py" else TINY
    if "in" == os.path.basename(str(data)):
        extra = extra + ["--dataset", "imagenet"]
    assert_one_line_error(run_split([PYTHON, REPO / prog] + args + extra), prog, *words)


def _odd_images(directory, names, rng):
    """Images of every kind a user's directory holds: BGR JPEG, grayscale JPEG, CMYK JPEG,
    16-bit PNG, BGRA PNG; and broken ones: a truncated JPEG, a PNG of garbage."""
    from PIL import Image
    directory.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in names:
        kind = name.split("_")[0]
        image = rng.randint(0, 256, (20 + rng.randint(10), 24 + rng.randint(10), 3)).astype(np.uint8)
        path = directory / name
        if kind == "color":
            cv2.imwrite(str(path), image)
        elif kind == "gray":
            cv2.imwrite(str(path), image[:, :, 0])
        elif kind == "cmyk":
            buf = io.BytesIO()
            Image.fromarray(image[:, :, ::-1].copy()).convert("CMYK").save(buf, "JPEG")
            path.write_bytes(buf.getvalue())
        elif kind == "deep":
            cv2.imwrite(str(path), image.astype(np.uint16) * 257)
        elif kind == "alpha":
            cv2.imwrite(str(path), np.dstack([image, np.full(image.shape[:2], 9, np.uint8)]))
        elif kind == "truncated":
            ok, buf = cv2.imencode(".jpg", image)
            path.write_bytes(buf.tobytes()[: len(buf) // 2])
        elif kind == "garbage":
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 30)
        made[name] = kind
    return made


@pytest.fixture(scope="module")
def odd_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd") / "imagenet"
    rng = np.random.RandomState(0)
    _odd_images(root / "train" / "n01", ["color_a.JPEG", "gray_b.JPEG", "cmyk_c.JPEG", "truncated_d.JPEG"], rng)
    _odd_images(root / "train" / "n02", ["deep_e.png", "alpha_f.png", "garbage_g.png", "color_h.JPEG"], rng)
    _odd_images(root / "val" / "n01", ["color_1.JPEG", "deep_2.png", "truncated_3.JPEG"], rng)
    _odd_images(root / "val" / "n02", ["alpha_4.png", "cmyk_5.JPEG", "garbage_6.png", "gray_7.JPEG"], rng)
    return root


def test_odd_and_broken_images_in_training_evaluation_and_black_box(odd_imagenet, tmp_path):
    """Grayscale, CMYK, 16-bit and alpha images are converted and used; truncated and
    corrupt ones are reported by name, counted and skipped, in train.py (training and its
    evaluation), eval.py on the validation set, and eval.py --eval-directory."""
    logdir = tmp_path / "run"
    out = run([PYTHON, REPO / "train.py", "--data", odd_imagenet, "--arch", "S14", "--width", "4", "--batch", "2",
               "--attack-iter", "1", "--steps-per-epoch", "2", "--epochs", "1", "--eval-attack-iters", "0",
               "--eval-long-attack-iter", "0", "--eval-batch", "4", "--loader-workers", "1", "--logdir", logdir],
              timeout=600).stdout
    for name in ("truncated_d.JPEG", "garbage_g.png", "truncated_3.JPEG", "garbage_6.png"):
        assert re.search(r"Skipping image .*%s" % re.escape(name), out), name
    record = metrics(logdir)[-1]
    assert record["clean/num_images"] == 5                     # 7 val images, 2 broken
    assert record["data/skipped_images"] == 4                  # 2 in train/, 2 in val/
    # eval.py on the same validation set: the same 5 images, the count in the JSON and on stderr
    proc = run_split([PYTHON, REPO / "eval.py", "--load", logdir / "model-final.npz", "--data", odd_imagenet,
                      "--attack-iter", "0", "--batch", "4", "--quiet", "--json-out", tmp_path / "e.json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["white_box"]["clean"]["num_images"] == 5 and doc["skipped_images"] == 2
    assert "skipped 2 unreadable image file(s)" in proc.stderr
    # --per-image and --save-adversarial under horovodrun cannot place the shards' images once
    # files were skipped: they say so rather than write files that are not in the images' order
    proc = horovodrun(2, [REPO / "eval.py", "--load", logdir / "model-final.npz", "--data", odd_imagenet,
                          "--attack-iter", "0,1", "--batch", "4", "--quiet", "--per-image", tmp_path / "p.npz",
                          "--save-adversarial", tmp_path / "adv"], check=False)
    assert proc.returncode != 0 and "rerun in one process" in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "adv" / "labels.txt").exists()
    # black-box: a flat directory of the same kinds
    flat = tmp_path / "flat"
    made = _odd_images(flat, ["color_1.JPEG", "gray_2.JPEG", "cmyk_3.JPEG", "deep_4.png", "alpha_5.png",
                              "truncated_6.JPEG", "garbage_7.png"], np.random.RandomState(1))
    proc = run_split([PYTHON, REPO / "eval.py", "--load", logdir / "model-final.npz", "--eval-directory", flat,
                      "--prediction-file", tmp_path / "p.txt", "--quiet", "--json-out", tmp_path / "b.json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [x.split(",")[0] for x in (tmp_path / "p.txt").read_text().splitlines()]
    assert names == sorted(n for n, k in made.items() if k not in ("truncated", "garbage"))
    assert json.loads((tmp_path / "b.json").read_text())["skipped_images"] == 2
    assert "truncated_6.JPEG" in proc.stdout + proc.stderr and "garbage_7.png" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------- checkpoints

def _bad_checkpoint(kind, tiny_run, tmp_path):
    if kind == "missing":
        return tmp_path / "absent.npz"
    if kind == "truncated":
        raw = (tiny_run / "model-final.npz").read_bytes()
        (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
        return tmp_path / "cut.npz"
    np.savez(tmp_path / "evil.npz", payload=np.array([{"run": "code"}], dtype=object))
    return tmp_path / "evil.npz"


@pytest.mark.parametrize("prog", ["eval.py", "train.py"])
@pytest.mark.parametrize("kind, words", [
    ("missing", ["does not exist", "check the --load path"]),
    ("truncated", ["truncated or not an .npz file", "re-download or re-export it"]),
    ("pickled", ["holds pickled objects, which are refused", "re-save it with plain arrays"]),
], ids=["missing", "truncated", "pickled"])
def test_a_bad_checkpoint_gives_one_line(tiny_run, tmp_path, prog, kind, words):
    """(A checkpoint of another architecture: tests/test_eval.py and tests/test_training.py.)"""
    path = _bad_checkpoint(kind, tiny_run, tmp_path)
    extra = ["--fake", "--attack-iter", "0"] if prog == "eval.py" else ["--fake", "--logdir", tmp_path / "l"] + TINY
    line = assert_one_line_error(run_split([PYTHON, REPO / prog, "--load", path] + extra), prog, *words)
    assert str(path) in line


def test_resuming_a_log_directory_of_another_architecture_is_refused(tiny_run, tmp_path):
    """A log directory reused with other flags: resuming would restore a part of the model
    and train the rest from scratch; it fails with the list instead and touches nothing."""
    logdir = copy_run(tiny_run, tmp_path / "run")
    before = sorted(os.listdir(logdir))
    recorded = (logdir / "arch.json").read_text()
    proc = run_split(FAKE_TRAIN + ["--denoise", "mean", "--epochs", "3", "--logdir", logdir])
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_lines(proc, "train.py")
    assert len(line) == 1 and "does not fit the architecture" in line[0] and "another --logdir" in line[0]
    assert "group0_denoise/conv/W" in proc.stderr
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 6
    assert (logdir / "arch.json").read_text() == recorded       # eval.py --load DIR still reads the right one
    assert [n for n in sorted(os.listdir(logdir)) if not n.startswith(("log.log", "events", "graph-"))] == \
        [n for n in before if not n.startswith(("log.log", "events", "graph-"))]


def test_resuming_with_another_total_batch_is_refused(tiny_run, tmp_path):
    """Relaunched with another total batch (say on fewer machines), a resumed run would start
    at the wrong epoch with the wrong learning rate; it stops with one line and trains nothing."""
    logdir = copy_run(tiny_run, tmp_path / "run")
    proc = run_split([PYTHON, REPO / "train.py", "--fake", "--batch", "4"] + TINY + ["--epochs", "3",
                                                                                     "--logdir", logdir])
    assert_one_line_error(proc, "train.py", "total batch of 8 (1 workers x 8)", "this run has 4 (1 x 4)",
                          "--total-batch 8")
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 6


RANKS_DISAGREE = r"""
import sys
from model.checkpoint import CheckpointError
from core.dist import rank_and_size
from training.resume import check_ranks_agree_on_resume
rank, _ = rank_and_size()
epochs = [int(x) for x in sys.argv[1].split(",")]
try:
    check_ranks_agree_on_resume(epochs[rank], "/logs")
    print("rank %d: agreed" % rank)
except CheckpointError as e:
    print("rank %d: refused: %s" % (rank, e))
"""


@pytest.mark.horovod
def test_ranks_that_see_different_checkpoints_stop_together(tmp_path):
    """Without a shared log directory the chief would resume and the others start again,
    then hang in their per-epoch allreduces: every rank compares its starting epoch first."""
    script = tmp_path / "agree.py"
    script.write_text(RANKS_DISAGREE)
    from helpers import horovodrun
    agreed = horovodrun(2, [script, "3,3"], timeout=120).stdout
    assert agreed.count(": agreed") == 2
    refused = horovodrun(2, [script, "3,1"], timeout=120).stdout
    assert refused.count(": refused: the ranks see different checkpoints in --logdir /logs") == 2
    assert "same shared log directory" in refused


def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(tiny_run, tmp_path):
    """No fsync precedes TensorFlow's renames: after a machine crash the newest checkpoint
    can have short files. Resuming notices (sizes against the index), says so, and
    resumes from the one before."""
    logdir = copy_run(tiny_run, tmp_path / "run")
    data = logdir / "model-6.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    assert checkpoint.checkpoint_problem(str(logdir / "model-6")).startswith("data files hold 1000 bytes")
    assert checkpoint.checkpoint_problem(str(logdir / "model-3")) is None
    params, _ = checkpoint.read_checkpoint(str(logdir))          # eval.py --load DIR reads model-3
    np.testing.assert_array_equal(params["linear/W"], read_every_tensor(logdir / "model-3")["linear/W"])
    out = run(FAKE_TRAIN + ["--epochs", "2", "--logdir", logdir]).stdout
    assert "model-6 is damaged (data files hold 1000 bytes" in out
    assert re.search(r"Resuming from .*model-3 at epoch 2", out)
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 6 and checkpoint.checkpoint_problem(
        str(logdir / "model-6")) is None                       # epoch 2 trained and saved again


# ------------------------------------------------------------------------------- faults

SAVER_PROBE = r"""
import inspect, os, resource, sys
import tensorflow as tf
from tensorflow.python.lib.io import file_io
from tensorflow.python.checkpoint import checkpoint_management
tf.compat.v1.disable_eager_execution()
d, case = sys.argv[1], sys.argv[2]
if case == "data":      # one big tensor: the data file is the large one
    tf.compat.v1.get_variable("big", [100000], initializer=tf.compat.v1.ones_initializer())
else:                   # 300 scalars with long names: the index is ten times the data
    for i in range(300):
        tf.compat.v1.get_variable("layer%03d/kernel" % i, [], initializer=tf.compat.v1.ones_initializer())
step = tf.compat.v1.train.get_or_create_global_step()
saver = tf.compat.v1.train.Saver(save_relative_paths=True)
with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    sess.run(step.assign(1))
    saver.save(sess, os.path.join(d, "model"), global_step=step, write_meta_graph=False)
    sizes = {n: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)}
    limit = {"data": sizes["model-1.data-00000-of-00001"] // 2, "index": sizes["model-1.index"] // 2}[case]
    sess.run(step.assign(2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))   # SIGXFSZ ignored: EFBIG
    try:
        saver.save(sess, os.path.join(d, "model"), global_step=step, write_meta_graph=False)
        print("SAVED")
    except tf.errors.OpError as e:
        print("FAILED", [x for x in e.message.splitlines() if "File too large" in x][0])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("FILES", sorted(os.listdir(d)))
print("STATE", tf.train.latest_checkpoint(d))
print("ATOMIC_STATE", "atomic_write_string_to_file" in inspect.getsource(
    checkpoint_management.update_checkpoint_state_internal) and ".tmp" in inspect.getsource(
    file_io.atomic_write_string_to_file) and "rename" in inspect.getsource(file_io.atomic_write_string_to_file))
"""


@pytest.mark.parametrize("case", ["data", "index"])
def test_tensorflow_writes_checkpoint_files_to_temporaries_then_renames(tmp_path, case):
    """What makes a kill mid-save harmless, checked on the installed TensorFlow: the write
    of model-2's data file, or of its index, fails half way (a file-size limit), and the
    error names a '.tempstate' temporary; model-2 never appears under its own name and the
    'checkpoint' state file, rewritten through a temporary and a rename, still names model-1."""
    proc = run([PYTHON, "-c", SAVER_PROBE, tmp_path, case])
    out = proc.stdout
    failed = re.search(r"^FAILED (.*)$", out, re.M)
    assert failed and re.search(r"model-2\.%s.*\.tempstate\d+; File too large" % (
        "data-00000-of-00001" if case == "data" else "index"), failed.group(1)), out[-2000:]
    files = eval(re.search(r"^FILES (.*)$", out, re.M).group(1))
    stray = [f for f in files if f.startswith("model-2") and ".tempstate" not in f]
    # the index is written last: when its write fails the data file may be complete already,
    # but without its index model-2 is no checkpoint (nothing restores it)
    assert stray == ([] if case == "data" else [f for f in stray if f.startswith("model-2.data-")]), files
    assert "model-2.index" not in files
    assert re.search(r"^STATE .*model-1$", out, re.M)
    assert "ATOMIC_STATE True" in out


def test_sigkill_mid_run_then_the_same_command_resumes(tmp_path, spawn):
    """Killed with SIGKILL in the middle of epoch 2 (checkpoint model-3 written), the same
    command resumes from model-3 at epoch 2 and finishes: nothing but the part of epoch 2
    done before the kill is lost. --total-batch 8 in one process is --batch 8."""
    logdir = tmp_path / "run"
    cmd = [str(c) for c in [PYTHON, REPO / "train.py", "--fake", "--total-batch", "8"] + TINY +
           ["--epochs", "3", "--logdir", logdir]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", FDENOISE_FAULT="stall-after-step:5")
    with open(tmp_path / "out.txt", "w") as out:
        proc = spawn(cmd, cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(tmp_path / "out.txt", r"stalled after step 5", proc)
        assert global_step(tf.train.latest_checkpoint(str(logdir))) == 3      # the first checkpoint exists
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert [r["epoch_num"] for r in metrics(logdir)] == [1]
    out = run(cmd).stdout
    assert re.search(r"Resuming from .*model-3 at epoch 2", out), out[-3000:]
    assert [r["epoch_num"] for r in metrics(logdir)] == [1, 2, 3]
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 9 and (logdir / "model-final.npz").exists()


def wait_for(path, pattern, proc, timeout=240):
    """Wait until ``pattern`` appears in the file ``path`` (a process's output)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = open(path).read()
        m = re.search(pattern, text)
        if m:
            return m
        if proc.poll() is not None:
            raise AssertionError("exited (%s) before %r:\n%s" % (proc.returncode, pattern, text[-3000:]))
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no %r within %d s:\n%s" % (pattern, timeout, open(path).read()[-3000:]))


def test_a_kill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """The process dies inside TensorFlow's write of model-6's data file (SIGXFSZ at its
    default action: the kernel kills it at the byte where the size limit falls, like
    SIGKILL there). model-3 and the state file naming it are intact; restarting removes
    the partial file, resumes from model-3 and finishes."""
    logdir = tmp_path / "run"
    cmd = FAKE_TRAIN + ["--epochs", "2", "--logdir", logdir]
    proc = run_split(cmd, env={"FDENOISE_FAULT": "kill-in-save:6"})
    assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, proc.stderr[-2000:])
    limit = int(re.search(r"under a (\d+)-byte file-size limit", proc.stderr).group(1))
    partial = [n for n in os.listdir(logdir) if n.startswith("model-6")]
    assert len(partial) == 1 and ".tempstate" in partial[0]                  # killed mid-write of the data
    assert os.path.getsize(logdir / partial[0]) == limit
    full = os.path.getsize(logdir / "model-3.data-00000-of-00001")
    assert 0 < limit < full
    assert tf.train.latest_checkpoint(str(logdir)) == str(logdir / "model-3")
    assert read_every_tensor(logdir / "model-3")["global_step"] == 3
    out = run(cmd).stdout
    assert "Removed 1 file(s) of an interrupted checkpoint write: " + partial[0] in out
    assert re.search(r"Resuming from .*model-3 at epoch 2", out), out[-3000:]
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 6 and (logdir / "model-final.npz").exists()
    assert not checkpoint.partial_checkpoint_files(str(logdir))


def test_a_full_disk_during_a_checkpoint_write(tmp_path):
    """The write of model-6 fails (EFBIG under a file-size limit, as ENOSPC on a full disk):
    one line naming the step, the reason and the intact model-3; no partial file; model-3
    loads; no final model is exported from the unfinished run. (tensorpack's own ModelSaver
    would log the error and train on, or take this OutOfRangeError for the end of training.)"""
    logdir = tmp_path / "run"
    proc = run_split(FAKE_TRAIN + ["--epochs", "3", "--logdir", logdir], env={"FDENOISE_FAULT": "disk-full-in-save:6"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_lines(proc, "train.py")
    assert len(line) == 1, proc.stderr[-3000:]
    assert "could not write the checkpoint of step 6" in line[0] and "(File too large)" in line[0]
    assert "the last good checkpoint, %s, is intact" % (logdir / "model-3") in line[0]
    assert "free disk space" in line[0] and "run the same command to resume" in line[0]
    assert "Traceback" not in proc.stdout + proc.stderr and "Logging error" not in proc.stdout + proc.stderr
    assert not checkpoint.partial_checkpoint_files(str(logdir))
    assert not [n for n in os.listdir(logdir) if n.startswith("model-6")]
    assert tf.train.latest_checkpoint(str(logdir)) == str(logdir / "model-3")
    params, arch = checkpoint.read_checkpoint(str(logdir))                  # as eval.py --load DIR reads it
    assert arch["width"] == 4
    np.testing.assert_array_equal(params["linear/W"], read_every_tensor(logdir / "model-3")["linear/W"])
    assert not (logdir / "model-final.npz").exists()


@pytest.mark.once
@pytest.mark.horovod
def test_a_rank_that_freezes_or_dies_ends_the_job_and_the_restart_resumes(tmp_path, spawn):
    """Under horovodrun (Gloo, 2 ranks), rank 1 stops after step 4 (rank 0 waits in step 5's
    allreduce), with checkpoint model-3 written. (1) Frozen (SIGSTOP: a hung node, or one
    gone without closing its sockets): rank 0's Gloo operation times out after
    HOROVOD_GLOO_TIMEOUT_SECONDS, it exits with one line, and horovodrun ends the job.
    (2) The same command again: every rank resumes from model-3 at epoch 2 and trains step 4
    together; then rank 1 is killed (SIGKILL: a dead rank) and horovodrun ends the job at
    once. Both exit non-zero within a bound. (A resumed run that goes on to the end:
    test_sigkill_mid_run_then_the_same_command_resumes; ranks in step after a 2-rank run:
    tests/test_training.py::test_two_rank_training_and_distributed_evaluation.)"""
    logdir = tmp_path / "run"
    cmd = [str(c) for c in [HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", PYTHON, REPO / "train.py",
                            "--fake", "--batch", "8"] + TINY + ["--epochs", "2", "--logdir", logdir]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", FDENOISE_FAULT="stall-after-step:4:1",
               HOROVOD_GLOO_TIMEOUT_SECONDS="20")
    for how, sig in (("freeze", signal.SIGSTOP), ("die", signal.SIGKILL)):
        out_path = tmp_path / ("%s.txt" % how)
        with open(out_path, "w") as out:
            proc = spawn(cmd, cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT)
            m = wait_for(out_path, r"rank 1 \(pid (\d+)\) stalled after step 4", proc)
            assert global_step(tf.train.latest_checkpoint(str(logdir))) == 3
            os.kill(int(m.group(1)), sig)
            start = time.time()
            code = proc.wait(timeout=120)
            elapsed = time.time() - start
        text = out_path.read_text()
        assert code != 0 and elapsed < 90, (how, code, elapsed, text[-3000:])
        if how == "freeze":
            line = [x for x in text.splitlines() if x.startswith("[0]<stderr>:train.py: error:")]
            assert len(line) == 1 and "another rank failed or stopped responding" in line[0], text[-3000:]
            assert "the last checkpoint, %s, is intact" % (logdir / "model-3") in line[0]
            assert "Timed out waiting 20000ms" in text                   # Gloo's own words
        else:
            for rank in (0, 1):
                assert re.search(r"^\[%d\]<stdout>:.*Resuming from .*model-3 at epoch 2" % rank, text, re.M)
            assert "Process 1 exit with status code 137" in text
    assert [r["epoch_num"] for r in metrics(logdir)] == [1]
    assert global_step(tf.train.latest_checkpoint(str(logdir))) == 3


def test_atomic_write_replaces_whole_files_with_ordinary_permissions(tmp_path):
    """Files written atomically (checkpoints, JSON, docs) are complete or absent, and readable
    like any other file (mkstemp alone would leave them 0600)."""
    from core.files import atomic_write
    path = tmp_path / "out.json"
    atomic_write(str(path), lambda f: f.write("first"), mode="w")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        atomic_write(str(path), lambda f: (f.write("half"), (_ for _ in ()).throw(RuntimeError("boom"))), mode="w")
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["out.json"]


# ------------------------------------------------------------------ wrong figures and lost work
EVAL = [PYTHON, REPO / "eval.py"]
FMNIST = "/usr/share/datasets/fashion-mnist"


def _edited_checkpoint(tiny_run, tmp_path, name, edit):
    params, arch = checkpoint.read_checkpoint(str(tiny_run / "model-final.npz"))
    edit(params)
    path = tmp_path / name
    data = {k: v for k, v in params.items()}
    data[checkpoint.ARCH_KEY] = np.frombuffer(json.dumps(arch).encode(), np.uint8)
    np.savez(str(path), **data)
    return path


def test_a_model_with_constant_logits_scores_100_percent_top1_error(tiny_run, tmp_path):
    """Every class the same score: the label ties with all others, which is an error (ties were
    counted correct by tf.nn.in_top_k: 0% top-1 error)."""
    def zero(params):
        params["linear/W"][:] = 0
        params["linear/b"][:] = 0
    path = _edited_checkpoint(tiny_run, tmp_path, "constant.npz", zero)
    run(EVAL + ["--load", path, "--data", FMNIST, "--dataset", "fashion-mnist", "--attack-iter", "0", "--limit", "40",
                "--json-out", tmp_path / "r.json", "--quiet"])
    clean = json.loads((tmp_path / "r.json").read_text())["white_box"]["clean"]
    assert clean["top1_error"] == 1.0 and clean["top5_error"] == 1.0 and clean["non_finite_images"] == 0


@pytest.mark.parametrize("prog", ["eval.py", "train.py"])
@pytest.mark.parametrize("kind, words", [
    ("int32", ["not floating point", "87 variable(s)", "use the original file"]),
    ("nan", ["NaN or infinite values", "linear/W", "use an earlier checkpoint"]),
    ("arch", ["architecture record (__arch__)", "is damaged", "--arch flags"]),
])
def test_cast_non_finite_or_damaged_checkpoints_are_refused(tiny_run, tmp_path, prog, kind, words):
    """A cast checkpoint would score as a working model (constant logits), a NaN one as a bad
    one, and a damaged architecture record was a traceback: each is one line, before any work."""
    if kind == "int32":
        path = _edited_checkpoint(tiny_run, tmp_path, "m.npz", lambda p: p.update({k: v.astype(np.int32)
                                                                                  for k, v in p.items()}))
    elif kind == "nan":
        path = _edited_checkpoint(tiny_run, tmp_path, "m.npz", lambda p: p["linear/W"].__setitem__((0, 0), np.nan))
    else:
        params, _ = checkpoint.read_checkpoint(str(tiny_run / "model-final.npz"))
        path = tmp_path / "m.npz"
        np.savez(str(path), **params, __arch__=np.frombuffer(b"{not json", np.uint8))
    extra = ["--fake", "--dataset", "fashion-mnist", "--attack-iter", "0"] if prog == "eval.py" else \
        ["--fake", "--logdir", tmp_path / "l"] + TINY
    assert_one_line_error(run_split([PYTHON, REPO / prog, "--load", path] + extra), prog, *words)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan"])
def test_an_infinite_epsilon_is_refused(tiny_run, value):
    proc = run_split(EVAL + ["--load", tiny_run / "model-final.npz", "--fake", "--attack-epsilon", value])
    assert_one_line_error(proc, "eval.py", "--attack-epsilon", "finite")


def _images(directory, names, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name in names:
        assert cv2.imwrite(str(directory / name), rng.randint(0, 256, (28, 28), dtype=np.uint8))


@pytest.mark.parametrize("case, words", [
    ("duplicate", ["names a.png twice", "one label per image"]),
    ("partial", ["the labels name 2 of the 5 images", "add labels for the other 3"]),
    ("range", ["outside the model's classes 0..9"]),
    ("empty", ["holds no labels"]),
    ("missing", ["does not exist"]),
    ("directory", ["is a directory"]),
    ("binary", ["is not a text file"]),
])
def test_all_or_nothing_labels_are_checked(tiny_run, tmp_path, case, words):
    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    _images(tmp_path / "atk", names)
    labels = tmp_path / "labels.txt"
    text = {"duplicate": "a.png,1\nb.png,2\na.png,3\n", "partial": "a.png,1\nb.png,2\n",
            "range": "".join("%s,%d\n" % (n, 12 if n == "c.png" else 1) for n in names), "empty": "\n"}
    if case in text:
        labels.write_text(text[case])
    elif case == "directory":
        labels.mkdir()
    elif case == "binary":
        labels.write_bytes(bytes(range(256)) * 4)
    proc = run_split(EVAL + ["--load", tiny_run / "model-final.npz", "--labels", labels, "--all-or-nothing",
                             tmp_path / "atk", "--quiet"])
    assert_one_line_error(proc, "eval.py", *words)


def test_any_filename_round_trips_through_predictions_and_labels(tiny_run, tmp_path):
    """Names with spaces, commas and quotes: the prediction file quotes them (CSV), and the
    same file read back as labels gives every image right, including under all-or-nothing;
    an image an attacker lacks counts as wrong and is counted."""
    names = ["plain.png", "with space.png", "with,comma.png", 'with "quote".png', " lead.png"]
    _images(tmp_path / "a1", names)
    _images(tmp_path / "a2", names[:-1])
    run(EVAL + ["--load", tiny_run / "model-final.npz", "--eval-directory", tmp_path / "a1", "--prediction-file",
                tmp_path / "pred.csv", "--quiet"])
    from data.labels import read_labels
    assert sorted(read_labels(str(tmp_path / "pred.csv"))) == sorted(names)
    run(EVAL + ["--load", tiny_run / "model-final.npz", "--labels", tmp_path / "pred.csv", "--all-or-nothing",
                tmp_path / "a1", tmp_path / "a2", "--json-out", tmp_path / "aon.json", "--quiet"])
    res = json.loads((tmp_path / "aon.json").read_text())["all_or_nothing"]
    assert res["per_attacker_accuracy"]["a1"] == 1.0 and res["missing_images"] == {"a1": 0, "a2": 1}
    assert res["all_or_nothing_accuracy"] == pytest.approx(4 / 5)


@pytest.mark.parametrize("flag", ["--json-out", "--export-frozen", "--per-image"])
def test_an_output_that_is_the_input_is_refused(tiny_run, tmp_path, flag):
    """Pointing an output at the --load file would replace the only copy of the weights."""
    model = tmp_path / "model.npz"
    model.write_bytes((tiny_run / "model-final.npz").read_bytes())
    before = model.read_bytes()
    extra = ["--fake", "--attack-iter", "0"] if flag != "--export-frozen" else []
    proc = run_split(EVAL + ["--load", model, flag, model] + extra)
    assert_one_line_error(proc, "eval.py", flag, "is the --load input")
    assert model.read_bytes() == before


@pytest.mark.parametrize("case", ["directory", "through-a-file"])
@pytest.mark.parametrize("flag", ["--json-out", "--prediction-file", "--per-image"])
def test_a_bad_output_path_is_refused_before_any_work(tiny_run, tmp_path, case, flag):
    """Found at the start (an hours-long evaluation used to end with a traceback and nothing
    written): one line, exit 2, and the evaluation never starts."""
    (tmp_path / "afile").write_text("x")
    bad = tmp_path if case == "directory" else tmp_path / "afile" / "out.json"
    mode = ["--eval-directory", tmp_path / "imgs"] if flag == "--prediction-file" else ["--fake", "--attack-iter",
                                                                                        "0,50", "--limit", "5000"]
    _images(tmp_path / "imgs", ["a.png"])
    proc = run_split(EVAL + ["--load", tiny_run / "model-final.npz", flag, bad] + mode)
    line = assert_one_line_error(proc, "eval.py", flag)
    assert ("is a directory" in line) if case == "directory" else ("which is a file" in line)
    assert "evaluating" not in proc.stderr and "images" not in proc.stdout      # no evaluation ran


def test_a_log_directory_whose_checkpoints_are_gone_is_refused_unless_restart(tiny_run, tmp_path):
    """Its metrics would get a second epoch 1 and its final weights would be replaced: refused;
    --restart moves the earlier run aside (nothing deleted) and trains anew; a finished run
    started again trains nothing and keeps its final weights."""
    logdir = copy_run(tiny_run, tmp_path / "run")
    final = (logdir / "model-final.npz").read_bytes()
    again = run_split(FAKE_TRAIN + ["--epochs", "2", "--logdir", logdir])
    assert again.returncode == 0 and "finished its 2 epochs" in again.stderr, again.stderr[-2000:]
    assert (logdir / "model-final.npz").read_bytes() == final
    # stopped after its last checkpoint but before the export: started again, it exports
    # that checkpoint's weights (those of the final model) and trains nothing
    os.rename(logdir / "model-final.npz", tmp_path / "kept.npz")
    lines = len(metrics(logdir))
    exported = run_split(FAKE_TRAIN + ["--epochs", "2", "--logdir", logdir])
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert len(metrics(logdir)) == lines
    with np.load(tmp_path / "kept.npz") as a, np.load(logdir / "model-final.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for name in os.listdir(logdir):
        if name.startswith("model-") and not name.startswith("model-final"):
            os.remove(logdir / name)
    proc = run_split(FAKE_TRAIN + ["--epochs", "2", "--logdir", logdir])
    assert_one_line_error(proc, "train.py", "holds an earlier run", "--restart")
    assert (logdir / "model-final.npz").read_bytes() == final
    lines = len(metrics(logdir))
    run(FAKE_TRAIN + ["--epochs", "1", "--logdir", logdir, "--restart"])
    previous = [d for d in os.listdir(logdir) if d.startswith("previous-")]
    assert len(previous) == 1
    assert (logdir / previous[0] / "model-final.npz").read_bytes() == final
    assert len([json.loads(x) for x in (logdir / previous[0] / "metrics.jsonl").read_text().splitlines()]) == lines
    assert [m["epoch_num"] for m in metrics(logdir)] == [1]


def test_a_log_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run_split(FAKE_TRAIN + ["--logdir", tmp_path / "afile"])
    assert_one_line_error(proc, "train.py", "--logdir", "is a file")


def test_ctrl_c_during_save_adversarial_leaves_no_partial_set(tiny_run, tmp_path, spawn):
    """SIGINT mid-way: one line, exit 130, and neither the set nor its partial directory
    (a partial set once looked whole to a later --eval-directory run)."""
    out = tmp_path / "adv"
    proc = spawn([str(c) for c in EVAL + ["--load", tiny_run / "model-final.npz", "--fake", "--dataset",
                                                       "fashion-mnist", "--attack-iter", "40", "--limit", "4000",
                                                       "--batch", "50", "--save-adversarial", out, "--quiet"]],
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    partial = tmp_path / "adv.partial" / "pgd40"
    deadline = time.time() + 240
    while time.time() < deadline and not (partial.is_dir() and len(os.listdir(partial)) >= 50):
        time.sleep(0.2)
    assert partial.is_dir() and os.listdir(partial), "the evaluation never wrote an image"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("[")]
    assert proc.returncode == 130, err[-2000:]
    assert len(lines) == 1 and "interrupted by SIGINT" in lines[0] and "Traceback" not in err, err[-2000:]
    assert not out.exists() and not (tmp_path / "adv.partial").exists()


def test_sigterm_ends_training_with_one_line_and_the_conventional_status(tmp_path, spawn):
    proc = spawn([str(c) for c in FAKE_TRAIN + ["--epochs", "2", "--logdir", tmp_path / "l"]],
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", FDENOISE_FAULT="stall-after-step:4"))
    deadline = time.time() + 240
    while time.time() < deadline and not ((tmp_path / "l").is_dir() and
                                          any(n.endswith(".index") for n in os.listdir(tmp_path / "l"))):
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted by SIGTERM" in err and "is intact" in err
    assert tf.train.latest_checkpoint(str(tmp_path / "l"))


def _png_header(width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND",
                                                                                                          b"")


def test_an_image_above_the_pixel_limit_is_skipped_before_decoding(tiny_run, tmp_path):
    """A 20000 x 20000 PNG (a decompression bomb: its header alone says so) is skipped with a
    warning, unread; the others are predicted."""
    _images(tmp_path / "imgs", ["a.png", "b.png"])
    (tmp_path / "imgs" / "huge.png").write_bytes(_png_header(20000, 20000))
    proc = run_split(EVAL + ["--load", tiny_run / "model-final.npz", "--eval-directory", tmp_path / "imgs",
                             "--prediction-file", tmp_path / "p.csv", "--json-out", tmp_path / "r.json", "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "huge.png" in output and "20000 x 20000 pixels" in output
    assert (tmp_path / "p.csv").read_text().count("\n") == 2
    assert json.loads((tmp_path / "r.json").read_text())["skipped_images"] == 1
    from data.images import read_image_bgr
    assert read_image_bgr(str(tmp_path / "imgs" / "huge.png"), max_pixels=10 ** 9) is None   # not a real image


def test_json_never_holds_nan(tmp_path):
    from core.files import write_json
    write_json(str(tmp_path / "x.json"), {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32("nan")})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail("non-standard constant " + c)) == {
        "a": None, "b": [1.0, None], "c": None}


def test_an_output_directory_that_holds_something_is_refused(tiny_run, tmp_path):
    """An adversarial set is written whole into a new (or empty) directory, never mixed into
    another; a SavedModel needs a new directory."""
    (tmp_path / "adv").mkdir()
    (tmp_path / "adv" / "old.png").write_bytes(b"x")
    proc = run_split(EVAL + ["--load", tiny_run / "model-final.npz", "--fake", "--attack-iter", "2",
                             "--save-adversarial", tmp_path / "adv"])
    assert_one_line_error(proc, "eval.py", "--save-adversarial", "is not empty")
    (tmp_path / "sm").mkdir()
    proc = run_split(EVAL + ["--load", tiny_run / "model-final.npz", "--export-savedmodel", tmp_path / "sm"])
    assert_one_line_error(proc, "eval.py", "--export-savedmodel", "exists")


# ---------------------------------------------------------------------------------------------
# The newest surfaces: AutoAttack and its members, the audit, the reproduction harness,
# bench.attacks, the ONNX export. Refusals before any work run in-process (the flags are checked
# before TensorFlow builds anything), faults in subprocesses.
FMNIST = "/usr/share/datasets/fashion-mnist"


def in_process(main, argv, capsys):
    """(exit status, the error lines on stderr) of ``main(argv)``, as the command line gets them."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, [x for x in err.splitlines() if "error" in x]


def eval_main(argv, capsys):
    import eval as eval_py
    return in_process(eval_py.main, argv, capsys)


@pytest.mark.parametrize("flags, words", [
    (["--attack", "apgd-ce", "--json-out", "{tmp}/S", "--per-image", "{tmp}/S"], "are both"),
    (["--save-adversarial", "{tmp}/D", "--json-out", "{tmp}/D/labels.txt"], "is inside --save-adversarial"),
    (["--save-adversarial", "{tmp}/D", "--per-image", "{tmp}/D/fgsm1/000000.png"], "is inside --save-adversarial"),
    (["--attack", "fgsm", "--restarts", "2"], "every restart would repeat"),
    (["--attack", "autoattack", "--restarts", "3"], "runs every member once"),
    (["--attack", "apgd-ce", "--attack-loss", "cw"], "has its own objectives"),
    (["--attack", "autoattack", "--attack-step-size", "2"], "chooses its own steps"),
    (["--attack", "autoattack", "--plot-out", "{tmp}/c.png"], "--plot-out is not used by --attack autoattack"),
    (["--attack", "square", "--square-queries", "7"], "--square-queries is not used by --attack square"),
    (["--attack", "square", "--eot", "4"], "uses no gradient"),
    (["--aa-version", "plus"], "--aa-version is not used by --attack pgd"),
    (["--attack", "autoattack", "--aa-attacks", "apgd-ce"], "--aa-attacks is not used by --aa-version standard"),
    (["--attack", "autoattack", "--aa-version", "rand", "--square-queries", "10"], "no Square member"),
    (["--attack", "autoattack", "--aa-version", "custom", "--aa-attacks", "apgd-ce,fgsm"], "unknown AutoAttack member"),
    (["--audit", "--attack-iter", "10", "--restarts", "2"], "not used by --audit"),
    (["--audit", "--per-image", "{tmp}/p.npz"], "not used by --audit"),
    (["--audit-transfer", "{tmp}/set.npz"], "add --audit"),
    (["--audit", "--audit-iter", "1"], "needs at least 2"),
    (["--export-onnx", "{tmp}/m.onnx", "--attack-iter", "10"], "not used by black-box prediction and export"),
    (["--export-onnx", "{load}"], "is the --load input"),
])
def test_newest_flags_are_checked_not_dropped(tiny_run, tmp_path, capsys, flags, words):
    argv = ["--load", tiny_run / "model-final.npz", "--data", FMNIST, "--limit", "8", "--quiet"] + [
        f.format(tmp=tmp_path, load=tiny_run / "model-final.npz") for f in flags]
    code, errors = eval_main(argv, capsys)
    assert code == 2 and len(errors) == 1 and words in errors[0], (code, errors)
    assert not os.path.exists(tmp_path / "S") and not os.path.exists(tmp_path / "D")


def test_export_onnx_without_the_extra_names_the_install(tiny_run, tmp_path):
    """tf2onnx that cannot be imported (as without the extra): one line with the install command."""
    fake = tmp_path / "shadow" / "tf2onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tf2onnx')\n")
    proc = run_split([PYTHON, REPO / "eval.py", "--load", tiny_run / "model-final.npz", "--export-onnx",
                      tmp_path / "m.onnx"], env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert_one_line_error(proc, "eval.py", "--export-onnx needs tf2onnx", "pip install -e '.[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


def test_apgd_t_is_refused_below_4_classes_and_fab_t_counts_its_real_targets():
    from attacks import AttackError, autoattack_members, make_attacker
    with pytest.raises(AttackError, match="at least 4 classes; this model has 3: use --aa-version custom"):
        autoattack_members("standard", num_classes=3)
    with pytest.raises(AttackError, match="use --attack apgd-ce or fab-t"):
        make_attacker("apgd-t", 10, 8.0, num_classes=3)
    members = autoattack_members("custom", attacks=["apgd-ce", "fab-t", "square"], num_classes=3)
    assert members["fab-t"].num_targets == 2 and "targets=2" in members["fab-t"].describe()
    assert autoattack_members("standard", num_classes=10)["apgd-t"].num_targets == 9


@pytest.fixture(scope="module")
def transfer_sets(tiny_run, tmp_path_factory):
    """--save-adversarial sets of the first 8 test images (and wrong ones: a larger epsilon,
    fewer images, other images), written by eval.py itself."""
    import eval as eval_py
    out = tmp_path_factory.mktemp("sets")
    base = ["--load", str(tiny_run / "model-final.npz"), "--data", FMNIST, "--quiet", "--attack", "fgsm",
            "--untargeted", "--attack-iter", "1"]
    for name, extra in (("ok.npz", ["--limit", "8"]), ("dir", ["--limit", "8"]),
                        ("big.npz", ["--limit", "8", "--attack-epsilon", "200", "--attack-step-size", "20"]),
                        ("three.npz", ["--limit", "3"]), ("validation.npz", ["--limit", "8", "--validation", "100"])):
        assert eval_py.main(base + extra + ["--save-adversarial", str(out / name)]) == 0
    return out


@pytest.mark.parametrize("target, words", [
    ("big.npz", "was crafted at a larger epsilon than the audit's 25.5"),
    ("three.npz", "holds 3 images; the audit runs on the first 8"),
    ("validation.npz", "holds other images than the audit's first 8"),
    ("dir", "is a set's top directory: pass one attack's directory"),
    ("missing.npz", "--audit-transfer {sets}/missing.npz does not exist"),
    ("dir/labels.txt", "is not an .npz set"),
    (".", "holds no .png images"),
])
def test_an_audit_transfer_set_must_come_from_the_same_images_and_ball(tiny_run, transfer_sets, capsys, target,
                                                                        words):
    argv = ["--load", tiny_run / "model-final.npz", "--data", FMNIST, "--limit", "8", "--quiet", "--audit",
            "--audit-iter", "2", "--audit-queries", "4", "--audit-transfer", transfer_sets / target]
    code, errors = eval_main(argv, capsys)
    assert code == 2 and len(errors) == 1, errors
    assert words.format(sets=transfer_sets) in errors[0] and "--audit-transfer" in errors[0], errors[0]


def test_the_audit_fails_with_status_3_and_refuses_to_pass_on_too_few_images(tiny_run, transfer_sets, tmp_path,
                                                                             capsys):
    """Below MIN_AUDIT_IMAGES no paired test could fail, so every check fails as "not enough
    images"; a set made right passes its checks and the audit goes on."""
    import eval as eval_py
    from evaluation.audit import MIN_AUDIT_IMAGES
    assert MIN_AUDIT_IMAGES == 6                  # 2 / 2^6 < 0.05 <= 2 / 2^5
    code = eval_py.main(["--load", str(tiny_run / "model-final.npz"), "--data", FMNIST, "--limit", "5", "--quiet",
                         "--audit", "--audit-iter", "2", "--audit-queries", "4", "--json-out", str(tmp_path / "a.json"),
                         "--audit-transfer", str(transfer_sets / "ok.npz"), str(transfer_sets / "dir" / "fgsm1")])
    out = capsys.readouterr()
    assert code == 3
    audit = json.loads((tmp_path / "a.json").read_text())["audit"]
    assert audit["passed"] is False and all(c["passed"] is False for c in audit["checks"].values())
    assert "not enough images: 5" in out.out and "audit: FAILED" in out.out
    assert "exit status 3" in " ".join(subprocess.run([PYTHON, REPO / "eval.py", "--help"], stdout=subprocess.PIPE,
                                                      text=True).stdout.split())


def test_bench_attacks_checks_its_flags_and_paths(tiny_run, capsys):
    import bench.attacks as bench_attacks
    model = tiny_run / "model-final.npz"
    for argv, words in ((["--load", model, "--json-out", model], "is the --load input"),
                        (["--load", model, "--iterations", "0"], "must be >= 1"),
                        (["--load", model, "--repeats", "0"], "must be >= 1"),
                        (["--load", model, "--images", "0"], "must be >= 1"),
                        (["--load", tiny_run / "nope.npz"], "does not exist")):
        code, errors = in_process(bench_attacks.main, argv, capsys)
        assert code == 2 and len(errors) == 1 and words in errors[0], (argv, errors)
    assert model.stat().st_size > 1000                     # the checkpoint is still the checkpoint


def experiments_main(argv, capsys):
    from experiments.__main__ import main
    return in_process(main, argv, capsys)


def test_the_harness_refuses_bad_out_and_docs_and_never_writes_the_committed_page(tmp_path, capsys):
    page = REPO / "docs" / "RESULTS.md"
    before = page.stat().st_mtime
    (tmp_path / "a-file").write_text("x")
    for argv, words in ((["--report-only", "--out", tmp_path / "nowhere"], "does not exist: there is no run"),
                        (["--list", "--out", tmp_path / "a-file"], "is a file: pass a directory"),
                        (["--report-only", "--docs", tmp_path / "a-file"],
                         "--docs %s is a file" % (tmp_path / "a-file")),
                        (["--budget", "tiny", "--out", "/proc/nowhere"], "cannot be written")):
        code, errors = experiments_main(argv, capsys)
        assert code == 2 and len(errors) == 1 and words in errors[0], (argv, errors)
    # another --out's page goes beside it, never over the committed one
    (tmp_path / "run").mkdir()
    code, _ = experiments_main(["--report-only", "--budget", "tiny", "--out", tmp_path / "run"], capsys)
    assert code == 0 and (tmp_path / "run" / "docs" / "RESULTS.md").exists()
    assert page.stat().st_mtime == before


def test_the_harness_stops_on_a_damaged_result_or_budget(tmp_path, capsys):
    import shutil
    out = tmp_path / "repro"
    shutil.copytree(REPO / "results" / "repro", out)
    damaged = out / "eval" / "baseline" / "seed1" / "untargeted.json"
    damaged.write_text(damaged.read_text()[:200])
    code, errors = experiments_main(["--report-only", "--out", out], capsys)
    assert code == 2 and len(errors) == 1 and str(damaged) in errors[0] and "does not parse" in errors[0], errors
    assert not (out / "docs").exists()
    budget = out / "budget.json"
    budget.write_text("{")
    code, errors = experiments_main(["--budget", "tiny", "--out", out], capsys)
    assert code == 2 and str(budget) in errors[0], errors
    assert budget.read_text() == "{"                       # not rewritten with the tiny budget


def test_sigterm_to_the_harness_reaches_its_running_job(tmp_path, spawn):
    """The harness passes the signal to the train.py it is running and waits for it: no orphan
    goes on writing into --out; one line and status 143."""
    out = tmp_path / "run"
    proc = spawn([PYTHON, "-m", "experiments", "--budget", "tiny", "--out", out, "--docs", tmp_path / "docs"],
                 cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 120
    children = []
    while time.time() < deadline and not children:
        time.sleep(0.5)
        listed = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "train.py"], stdout=subprocess.PIPE, text=True)
        children = [int(p) for p in listed.stdout.split()]
    assert children, "no train.py child started"
    time.sleep(3)                                           # into its TensorFlow start-up
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "interrupted by SIGTERM" in err
    for pid in children:
        assert not os.path.exists("/proc/%d" % pid) or "zombie" in open("/proc/%d/status" % pid).read().lower()


def test_train_refuses_a_log_directory_that_cannot_be_created_and_a_full_disk_at_the_graph_file(tmp_path):
    proc = run_split(FAKE_TRAIN + ["--logdir", "/proc/nowhere/run"])
    assert_one_line_error(proc, "train.py", "--logdir /proc/nowhere/run cannot be written")
    logdir = tmp_path / "run"
    proc = run_split(FAKE_TRAIN + ["--logdir", logdir], env={"FDENOISE_FAULT": "disk-full-in-graph:0"})
    line = error_lines(proc, "train.py")
    assert proc.returncode == 2 and len(line) == 1 and "could not write the graph file" in line[0], proc.stderr[-2000:]
    assert "(File too large)" in line[0] and "run the same command" in line[0]
    assert not [n for n in os.listdir(logdir) if n.startswith("graph-")]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_full_disk_at_the_end_of_an_evaluation_names_what_was_not_written(tiny_run, tmp_path):
    """Writes beyond 200 bytes fail (as on a full disk): the per-image file cannot be written;
    one line says so, that the printed results are complete, and nothing half-written is left."""
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))
    proc = subprocess.run([str(c) for c in [PYTHON, REPO / "eval.py", "--load", tiny_run / "model-final.npz", "--data",
                                            FMNIST, "--limit", "16", "--quiet", "--attack-iter", "0,1",
                                            "--per-image", tmp_path / "p.npz", "--json-out", tmp_path / "r.json"]],
                          preexec_fn=small_files, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    line = assert_one_line_error(proc, "eval.py", "could not write %s" % (tmp_path / "p.npz"), "(File too large)",
                                 "the results printed above are complete")
    assert "pgd1" in proc.stdout and line
    assert sorted(os.listdir(tmp_path)) == []
