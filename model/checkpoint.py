"""Checkpoints: the released ``.npz`` format (variable name -> array), tensorpack/TF
checkpoints, strict loading and atomic writing.

- Loading never executes code from a file: ``np.load(allow_pickle=False)``.
- A checkpoint that does not fit the graph fails with the list of missing, unexpected and
  mis-shaped variables, never a silent partial load.
- Files this project writes record the architecture (``__arch__``: JSON as uint8 bytes in
  the ``.npz``; ``arch.json`` beside TF checkpoints) and the data set it was trained on
  (``__dataset__``; run.json beside TF checkpoints), so nothing is guessed at load time.
- Writes go to a temporary file in the same directory, then ``os.replace``: a kill or a
  full disk mid-write leaves the previous file intact.
"""
import json
import os
import re
import zipfile

import numpy as np
import tensorflow as tf
from tensorpack.tfutils.sessinit import SessionInit
from tensorpack.utils import logger

from core.files import atomic_write, write_npz

ARCH_KEY = "__arch__"
DATASET_KEY = "__dataset__"
TRAINING_KEY = "__training__"
ARCH_FILE = "arch.json"
RUN_FILE = "run.json"
# Graph variables that are training state, not model weights.
# not the model: optimizer and schedule state, and free training's perturbation (model/methods.py)
NON_MODEL_PATTERNS = ("global_step", "learning_rate", "/Momentum", "EMA/", "local_step", "free_perturbation")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one-line message unless it lists variables)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (full disk, permissions); the previous one is intact."""


# ---------------------------------------------------------------------------- reading
def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError("%s holds pickled objects, which are refused (loading must not run code "
                                  "from a file): re-save it with plain arrays" % path) from None
        raise CheckpointError("%s is not a valid .npz checkpoint (%s): re-download or re-export it" % (
            path, e)) from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError("%s is truncated or not an .npz file (%s): re-download or re-export it" % (
            path, e.__class__.__name__)) from None


def _tf_checkpoint_prefix(path):
    """A TF checkpoint prefix from a prefix, a directory, or an .index/.data file."""
    if os.path.isdir(path):
        # the newest complete one: a damaged newest checkpoint (a crash mid-write) is skipped
        prefix = latest_valid_checkpoint(path, log=logger.warn)
        if prefix is None:
            raise CheckpointError("no complete TensorFlow checkpoint in directory %s: pass a .npz or a checkpoint "
                                  "prefix" % path)
        return prefix
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    if ".data-" in path:
        return path.split(".data-")[0]
    return path


def read_checkpoint(path):
    """-> (dict name -> array of model variables, arch dict or None). Weights that are not
    floating point, or not finite, are refused (``check_values``)."""
    params, arch = _read_checkpoint(path)
    check_values(params, path)
    return params, arch


def _list(names, limit=8):
    return ", ".join(names[:limit]) + (" ... (%d more)" % (len(names) - limit) if len(names) > limit else "")


def check_values(params, path):
    """A checkpoint whose weights are not floating point (an integer cast would truncate them
    and, as constant logits, score as a working model) or hold NaN or inf (a diverged run)
    fails here, naming the variables, before any evaluation or training uses it."""
    typed = sorted(k for k, v in params.items() if np.asarray(v).dtype.kind != "f")
    if typed:
        raise CheckpointError("checkpoint %s holds %d variable(s) that are not floating point (%s): the weights were "
                              "cast, so they are not the trained ones; use the original file" % (
                                  path, len(typed), _list(typed)))
    bad = sorted(k for k, v in params.items() if not np.all(np.isfinite(v)))
    if bad:
        raise CheckpointError("checkpoint %s holds NaN or infinite values in %d variable(s) (%s): it comes from a run "
                              "that diverged or a damaged file; use an earlier checkpoint" % (
                                  path, len(bad), _list(bad)))


def _read_checkpoint(path):
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise CheckpointError("checkpoint %s does not exist: check the --load path" % path)
    if path.endswith(".npz"):
        params = _read_npz(path)
        arch = None
        if ARCH_KEY in params:
            try:
                arch = json.loads(bytes(params.pop(ARCH_KEY)).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise CheckpointError("the architecture record (%s) of %s is damaged (%s): re-export the checkpoint, "
                                      "or delete the entry and pass the --arch flags" % (
                                          ARCH_KEY, path, str(e).splitlines()[0])) from None
            if not isinstance(arch, dict):
                raise CheckpointError("the architecture record (%s) of %s is not an object: re-export the checkpoint, "
                                      "or delete the entry and pass the --arch flags" % (ARCH_KEY, path))
        params.pop(DATASET_KEY, None)
        params.pop(TRAINING_KEY, None)
        return params, arch
    prefix = _tf_checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # noqa: BLE001  (TF raises several kinds)
        raise CheckpointError("cannot read TensorFlow checkpoint %s (%s): pass a .npz or a valid prefix" % (
            prefix, str(e).splitlines()[0])) from None
    params = {}
    try:
        for name in reader.get_variable_to_shape_map():
            if is_model_variable(name):
                params[name] = reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001  (a damaged data file: DataLossError and others)
        raise CheckpointError("TensorFlow checkpoint %s is damaged (%s): pass an older checkpoint prefix or a "
                              ".npz" % (prefix, str(e).splitlines()[0])) from None
    arch = None
    arch_file = os.path.join(os.path.dirname(prefix), ARCH_FILE)
    if os.path.exists(arch_file):
        try:
            with open(arch_file) as f:
                arch = json.load(f)
        except ValueError as e:
            raise CheckpointError("%s is damaged (%s): delete it and pass the --arch flags" % (
                arch_file, str(e).splitlines()[0])) from None
    return params, arch


def is_model_variable(name):
    return not any(p in name for p in NON_MODEL_PATTERNS)


# ---------------------------------------------------------------------------- checking
def model_variables(graph=None):
    """Variables that make up the model (trainable + BN statistics), by name."""
    graph = graph or tf.compat.v1.get_default_graph()
    with graph.as_default():
        candidates = tf.compat.v1.global_variables()
    return {v.op.name: v for v in candidates if is_model_variable(v.op.name)}


def compare(params, graph_vars):
    """-> (missing, unexpected, mismatched[(name, ckpt shape, graph shape)]). ``params``:
    name -> array, or name -> shape."""
    def shape(x):
        return tuple(x.shape) if hasattr(x, "shape") else tuple(x)
    missing = sorted(set(graph_vars) - set(params))
    unexpected = sorted(set(params) - set(graph_vars))
    mismatched = sorted((k, shape(params[k]), tuple(graph_vars[k].shape.as_list()))
                        for k in set(params) & set(graph_vars)
                        if shape(params[k]) != tuple(graph_vars[k].shape.as_list()))
    return missing, unexpected, mismatched


def format_mismatch(path, missing, unexpected, mismatched, limit=20,
                    fix="pass the right --arch/--denoise flags, or the right checkpoint"):
    def clip(items):
        items = [str(i) for i in items]
        return items[:limit] + (["... (%d more)" % (len(items) - limit)] if len(items) > limit else [])
    lines = ["checkpoint %s does not fit the architecture: %d missing, %d unexpected, %d mis-shaped variables "
             "(%s)" % (path, len(missing), len(unexpected), len(mismatched), fix)]
    if missing:
        lines.append("  missing: " + ", ".join(clip(missing)))
    if unexpected:
        lines.append("  unexpected: " + ", ".join(clip(unexpected)))
    if mismatched:
        lines.append("  mis-shaped: " + ", ".join(clip("%s %s vs graph %s" % m for m in mismatched)))
    return "\n".join(lines)


class StrictRestore(SessionInit):
    """A tensorpack SessionInit that loads ``params`` (name -> array) only if they fit the
    graph's model variables exactly; otherwise CheckpointError lists what does not fit.
    All values are assigned in one ``session.run``."""

    def __init__(self, params, path="checkpoint"):
        self.params = params
        self.path = path

    def _setup_graph(self):
        graph_vars = model_variables()
        missing, unexpected, mismatched = compare(self.params, graph_vars)
        if missing or unexpected or mismatched:
            raise CheckpointError(format_mismatch(self.path, missing, unexpected, mismatched))
        self._feeds, ops = {}, []
        with tf.name_scope("strict_restore"):
            for name, var in graph_vars.items():
                ph = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
                ops.append(var.assign(ph, read_value=False))
                self._feeds[ph] = name
        self._op = tf.group(*ops)

    def _run_init(self, sess):
        sess.run(self._op, {ph: self.params[name] for ph, name in self._feeds.items()})


def strict_session_init(params, path="checkpoint", graph=None):
    """StrictRestore for ``graph`` (checked at once, so errors surface before any work)."""
    graph = graph or tf.compat.v1.get_default_graph()
    with graph.as_default():
        missing, unexpected, mismatched = compare(params, model_variables(graph))
    if missing or unexpected or mismatched:
        raise CheckpointError(format_mismatch(path, missing, unexpected, mismatched))
    return StrictRestore(params, path)


# ---------------------------------------------------------------------------- writing
def recorded_training(path):
    """How a model.npz this project wrote was trained (train.py --method and its settings), or
    None."""
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                return json.loads(bytes(f[TRAINING_KEY]).decode("utf-8")) if TRAINING_KEY in f.files else None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError):
            return None
    return None


def recorded_dataset(path):
    """The data set a checkpoint this project wrote was trained on ('imagenet',
    'fashion-mnist'), or None (the released files, and older ones, do not say)."""
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                return bytes(f[DATASET_KEY]).decode("utf-8") if DATASET_KEY in f.files else None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError):
            return None
    directory = path if os.path.isdir(path) else os.path.dirname(_tf_checkpoint_prefix(path))
    try:
        with open(os.path.join(directory, RUN_FILE)) as f:
            return json.load(f).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None


def save_npz(path, params, arch=None, dataset=None, training=None):
    """Save ``params`` (name -> array) in the released format, plus the architecture, the
    data set and how the model was trained (the method and its settings: ``training``)."""
    data = {k: np.asarray(v) for k, v in params.items()}
    if training is not None:
        data[TRAINING_KEY] = np.frombuffer(json.dumps(training, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    if arch is not None:
        data[ARCH_KEY] = np.frombuffer(json.dumps(arch, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    if dataset is not None:
        data[DATASET_KEY] = np.frombuffer(str(dataset).encode("utf-8"), dtype=np.uint8)
    try:
        write_npz(path, compressed=False, **data)
    except OSError as e:
        raise CheckpointError("could not write %s (%s); the previous file, if any, is intact: free disk space "
                              "or choose another path" % (path, e.strerror or e)) from None


def save_arch_json(directory, arch):
    atomic_write(os.path.join(directory, ARCH_FILE),
                 lambda f: f.write(json.dumps(arch, indent=2, sort_keys=True)), mode="w")


def session_params(sess, graph=None):
    """Current values of the model variables."""
    variables = model_variables(graph)
    names = sorted(variables)
    values = sess.run([variables[n] for n in names])
    return dict(zip(names, values))


# ---------------------------------------------------------------------------- training checkpoints
# tensorpack's ModelSaver writes them with tf.compat.v1.train.Saver (V2 format, not sharded).
# TensorFlow 2.15 writes ``model-N.data-00000-of-00001`` and then ``model-N.index`` each to a
# ``.tempstate<random>`` file that it renames, and only then rewrites the ``checkpoint``
# state file through a ``checkpoint.tmp<hex>`` file and a rename (tests/test_reliability.py
# checks this on the installed TensorFlow). A process killed mid-save therefore leaves the
# previous checkpoint, and the state file naming it, intact; what it can leave behind is
# temporaries and, killed between the two renames, a data file without its index. No
# fsync precedes the renames, so a machine crash (not a process kill) can leave a named
# checkpoint with short files: resuming checks the sizes and falls back to an older one.
STATE_FILE = "checkpoint"
_PREFIX_RE = re.compile(r"^(?P<prefix>.+-(?P<step>\d+))\.index$")


def partial_checkpoint_files(directory):
    """Files that a checkpoint write which died left in ``directory``."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    indexed = {n[: -len(".index")] for n in names if n.endswith(".index")}
    partial = []
    for n in names:
        if ".tempstate" in n or n.startswith(STATE_FILE + ".tmp"):
            partial.append(n)
        elif ".data-" in n and n.split(".data-")[0] not in indexed:
            partial.append(n)
    return sorted(os.path.join(directory, n) for n in partial)


def remove_partial_checkpoint_files(directory, log=None):
    removed = []
    for path in partial_checkpoint_files(directory):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    if removed and log:
        log("Removed %d file(s) of an interrupted checkpoint write: %s" % (
            len(removed), ", ".join(os.path.basename(p) for p in removed)))
    return removed


def checkpoint_problem(prefix):
    """None if the TF checkpoint ``prefix`` is complete, else why not (one line).

    Cheap enough for every rank: reads the index and compares the data files' total size
    with the bytes of the tensors the index lists (a V2 bundle stores them unpadded)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except Exception as e:  # noqa: BLE001  (TF raises several kinds)
        return "unreadable index (%s)" % str(e).splitlines()[0]
    if any(dtypes[name] == tf.string for name in dtypes):
        return None
    expected = sum(int(np.prod(shapes[name], dtype=np.int64)) * dtypes[name].size for name in shapes)
    directory, base = os.path.split(prefix)
    data = [n for n in os.listdir(directory or ".") if n.startswith(base + ".data-") and ".tempstate" not in n]
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in data)
    if size != expected:
        return "data files hold %d bytes, the index lists %d" % (size, expected)
    return None


def training_checkpoints(directory):
    """Prefixes of the complete-looking checkpoints in ``directory`` (an index file and a
    global step in the name, or named by the state file), newest (highest step) first."""
    found = {}
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            m = _PREFIX_RE.match(name)
            if m and ".tempstate" not in name:
                found[os.path.join(directory, m.group("prefix"))] = int(m.group("step"))
    state = tf.train.get_checkpoint_state(directory) if os.path.isdir(directory) else None
    if state is not None:
        for i, path in enumerate(state.all_model_checkpoint_paths):
            path = path if os.path.isabs(path) else os.path.join(directory, path)
            if os.path.exists(path + ".index"):
                found.setdefault(path, -1 - len(state.all_model_checkpoint_paths) + i)
    return sorted(found, key=lambda p: -found[p])


def latest_valid_checkpoint(directory, log=None):
    """The newest complete checkpoint in ``directory`` (None if there is none); skipped
    damaged ones are reported through ``log``."""
    for prefix in training_checkpoints(directory):
        problem = checkpoint_problem(prefix)
        if problem is None:
            return prefix
        if log:
            log("Checkpoint %s is damaged (%s); trying an older one" % (prefix, problem))
    return None


def point_state_file_at(directory, prefix):
    """Make the ``checkpoint`` state file name ``prefix`` as the latest (atomic rewrite)."""
    keep = [p for p in reversed(training_checkpoints(directory)) if checkpoint_problem(p) is None]
    tf.compat.v1.train.update_checkpoint_state(directory, prefix, all_model_checkpoint_paths=keep)
