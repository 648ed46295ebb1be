"""Checkpoints: the released ``.npz`` format (variable name -> array), tensorpack/TF
checkpoints, strict loading and atomic writing.

- Loading never executes code from a file: ``np.load(allow_pickle=False)``.
- A checkpoint that does not fit the graph fails with the list of missing, unexpected and
  mis-shaped variables, never a silent partial load.
- Files this project writes record the architecture (``__arch__``: JSON as uint8 bytes in
  the ``.npz``; ``arch.json`` beside TF checkpoints) so nothing is guessed at load time.
- Writes go to a temporary file in the same directory, then ``os.replace``: a kill or a
  full disk mid-write leaves the previous file intact.
"""
import json
import os
import tempfile
import zipfile

import numpy as np
import tensorflow as tf
from tensorpack.tfutils.sessinit import SessionInit

ARCH_KEY = "__arch__"
ARCH_FILE = "arch.json"
# Graph variables that are training state, not model weights.
NON_MODEL_PATTERNS = ("global_step", "learning_rate", "/Momentum", "EMA/", "local_step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one-line message unless it lists variables)."""


# ---------------------------------------------------------------------------- reading
def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError("%s holds pickled objects, which are refused (loading must not run code "
                                  "from a file): re-save it with plain arrays" % path) from None
        raise CheckpointError("%s is not a valid .npz checkpoint (%s): re-download or re-export it" % (path, e)) from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError("%s is truncated or not an .npz file (%s): re-download or re-export it" % (
            path, e.__class__.__name__)) from None


def _tf_checkpoint_prefix(path):
    """A TF checkpoint prefix from a prefix, a directory, or an .index/.data file."""
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise CheckpointError("no TensorFlow checkpoint in directory %s: pass a .npz or a checkpoint prefix" % path)
        return prefix
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    if ".data-" in path:
        return path.split(".data-")[0]
    return path


def read_checkpoint(path):
    """-> (dict name -> array of model variables, arch dict or None)."""
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise CheckpointError("checkpoint %s does not exist: check the --load path" % path)
    if path.endswith(".npz"):
        params = _read_npz(path)
        arch = None
        if ARCH_KEY in params:
            arch = json.loads(bytes(params.pop(ARCH_KEY)).decode("utf-8"))
        return params, arch
    prefix = _tf_checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # noqa: BLE001  (TF raises several kinds)
        raise CheckpointError("cannot read TensorFlow checkpoint %s (%s): pass a .npz or a valid prefix" % (
            prefix, str(e).splitlines()[0])) from None
    params = {}
    for name in reader.get_variable_to_shape_map():
        if not is_model_variable(name):
            continue
        params[name] = reader.get_tensor(name)
    arch = None
    arch_file = os.path.join(os.path.dirname(prefix), ARCH_FILE)
    if os.path.exists(arch_file):
        with open(arch_file) as f:
            arch = json.load(f)
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
    """-> (missing, unexpected, mismatched[(name, ckpt shape, graph shape)])."""
    missing = sorted(set(graph_vars) - set(params))
    unexpected = sorted(set(params) - set(graph_vars))
    mismatched = sorted((k, tuple(params[k].shape), tuple(graph_vars[k].shape.as_list()))
                        for k in set(params) & set(graph_vars)
                        if tuple(params[k].shape) != tuple(graph_vars[k].shape.as_list()))
    return missing, unexpected, mismatched


def format_mismatch(path, missing, unexpected, mismatched, limit=20):
    def clip(items):
        items = [str(i) for i in items]
        return items[:limit] + (["... (%d more)" % (len(items) - limit)] if len(items) > limit else [])
    lines = ["checkpoint %s does not fit the architecture: %d missing, %d unexpected, %d mis-shaped variables "
             "(pass the right --arch/--denoise flags, or the right checkpoint)" % (
                 path, len(missing), len(unexpected), len(mismatched))]
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
def atomic_write(path, write_fn, mode="wb"):
    """Write through ``write_fn(fileobj)`` to a temporary file, fsync, then rename."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_npz(path, params, arch=None):
    """Save ``params`` (name -> array) in the released format, plus the architecture."""
    data = {k: np.asarray(v) for k, v in params.items()}
    if arch is not None:
        data[ARCH_KEY] = np.frombuffer(json.dumps(arch, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    try:
        atomic_write(path, lambda f: np.savez(f, **data))
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
