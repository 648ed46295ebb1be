"""Writing files so that an interrupted write never replaces a good file: the new content
goes to a temporary file in the same directory, is flushed to disk, then renamed over the
target. A kill or a full disk mid-write leaves the previous file intact."""
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
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
