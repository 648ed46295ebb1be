"""Writing files so that an interrupted write never replaces a good file: the new content
goes to a temporary file in the same directory, is flushed to disk, then renamed over the
target. A kill or a full disk mid-write leaves the previous file intact."""
import io
import json
import math
import os
import tempfile


def _umask():
    """The process's umask. /proc has it without changing it; elsewhere os.umask can only be
    read by setting it (briefly, for this thread's write)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write(path, write_fn, mode="wb"):
    """Write through ``write_fn(fileobj)`` to a temporary file, fsync, then rename."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            # mkstemp creates the file 0600; give it the permissions a plain open() would.
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None:
            # name the file the caller asked for, not the temporary one
            raise OSError(e.errno, e.strerror or str(e), path) from e
        raise


def replace_markdown_section(path, title, body):
    """Write ``path`` with its section ``## title`` (up to the next ``## ``) replaced by
    ``body``, or appended if there is none; the rest of the page as it was."""
    import re
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    block = "## %s\n\n%s\n" % (title, body.strip("\n"))
    pattern = re.compile(r"^## %s\n.*?(?=^## |\Z)" % re.escape(title), flags=re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: block + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    atomic_write(path, lambda f: f.write(text.rstrip("\n") + "\n"), mode="w")


def json_safe(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None: strict JSON parsers
    reject NaN, which Python's json writes by default."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:     # numpy scalars
        return json_safe(value.item())
    return value


def write_npz(path, compressed=True, **arrays):
    """``np.savez(_compressed)`` written atomically. The archive is built in memory first: a
    write that fails (a full disk) then leaves no half-open zip file behind to complain at exit."""
    import numpy as np
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))


def write_json(path, value, indent=2):
    """Strict JSON (no NaN) written atomically."""
    text = json.dumps(json_safe(value), indent=indent, sort_keys=True, allow_nan=False, default=str)
    atomic_write(path, lambda f: f.write(text), mode="w")


class PathError(ValueError):
    """An output path that cannot be written, or that is one of the inputs (one line)."""


def _same(a, b):
    """True if paths ``a`` and ``b`` name the same file or directory (after symlinks), or
    would once created (the same resolved path)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs, inputs=(), directories=()):
    """Before any long work: every output (flag -> path; None skipped) can be written, and
    none is an input (flag -> path or list of paths), so that an evaluation of hours never ends
    by failing to write its result or by replacing the only copy of the weights. ``directories``:
    the output flags that name directories (created or filled by the run). Raises PathError."""
    input_paths = []
    for flag, value in inputs:
        for path in ([value] if isinstance(value, str) else list(value or [])):
            input_paths.append((flag, path))
    for flag, path in outputs:
        if not path:
            continue
        for in_flag, in_path in input_paths:
            if _same(path, in_path) or (in_flag == "--load" and _same(path, in_path + ".index")):
                raise PathError("%s %s is the %s input: writing it would replace the input; pass another path" % (
                    flag, path, in_flag))
        is_dir = flag in directories
        if os.path.isdir(path) and not is_dir:
            raise PathError("%s %s is a directory: pass a file path" % (flag, path))
        if os.path.exists(path) and is_dir and not os.path.isdir(path):
            raise PathError("%s %s is a file, not a directory: pass a directory path" % (flag, path))
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise PathError("%s %s goes through %s, which is a file: pass a path in a directory" % (flag, path, parent))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PathError("%s %s cannot be written (no write permission in %s): pass a path you can write" % (
                flag, path, parent))
        probe_writable(parent, flag, path)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise PathError("%s %s is not writable: pass a path you can write" % (flag, path))
    given = [(flag, path) for flag, path in outputs if path]
    for i, (flag, path) in enumerate(given):
        for flag2, path2 in given[i + 1:]:
            if _same(path, path2):
                raise PathError("%s and %s are both %s: each output needs a path of its own" % (flag, flag2, path))
        for flag2, path2 in given:
            if flag2 in directories and flag2 != flag and _inside(path, path2):
                raise PathError("%s %s is inside %s %s, the set this run writes: pass a path outside it" % (
                    flag, path, flag2, path2))


def probe_writable(directory, flag, path):
    """A file can be created in ``directory`` (the nearest existing parent of an output):
    permissions say yes in pseudo file systems (/proc) and to root everywhere, where creating
    one still fails. The probe file is removed at once."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PathError("%s %s cannot be written (%s in %s): pass a path you can write" % (
            flag, path, e.strerror or e, directory))


def _inside(path, directory):
    """True if ``path`` lies under ``directory`` (after symlinks; neither need exist yet)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory and path != directory


def repo_relative(path):
    """``path`` relative to the git repository holding it (the page is committed: no machine's
    absolute paths on it), or as given outside any repository."""
    path = os.path.abspath(path)
    root = path
    while not os.path.exists(os.path.join(root, ".git")):
        parent = os.path.dirname(root)
        if parent == root:
            return path
        root = parent
    return os.path.relpath(path, root)
