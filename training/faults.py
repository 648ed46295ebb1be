"""Fault injection for the reliability tests (docs/RELIABILITY.md). Off unless the
environment variable ``FDENOISE_FAULT`` is set; then it holds comma-separated
``kind:global_step[:rank]`` items (no rank: every rank):

- ``stall-after-step:N``: after training step N the process stops making progress
  (sleeps, with its sockets open) after printing one line to stderr; the tests then
  ``SIGKILL`` or ``SIGSTOP`` it at that known moment, from outside.
- ``kill-in-save:N``: the checkpoint of step N is written under a file-size limit of half
  its variables' bytes with ``SIGXFSZ`` at its default action, so the kernel kills the
  process in the middle of TensorFlow's write of the data file (no handler, no clean-up:
  what SIGKILL at that byte would do), leaving a partial file behind.
- ``disk-full-in-save:N``: the same limit with ``SIGXFSZ`` ignored (Python's default), so
  the write fails with EFBIG ("File too large"), as a full disk fails with ENOSPC.
- ``disk-full-in-graph:0``: the graph file (``graph-*.meta``, written once before the first
  step) under a 1 kB file-size limit, so that write fails the same way.
"""
import contextlib
import os
import resource
import signal
import sys
import time

ENV = "FDENOISE_FAULT"
KINDS = ("stall-after-step", "kill-in-save", "disk-full-in-save", "disk-full-in-graph")


def planned(kind, step, rank=0):
    """True if ``FDENOISE_FAULT`` asks for ``kind`` at global step ``step`` on ``rank``."""
    for item in os.environ.get(ENV, "").split(","):
        parts = item.strip().split(":")
        if len(parts) < 2 or parts[0] != kind:
            continue
        if int(parts[1]) == int(step) and (len(parts) < 3 or int(parts[2]) == int(rank)):
            return True
    return False


def enabled():
    return bool(os.environ.get(ENV, "").strip())


def stall(step, rank):
    print("fault injection: rank %d (pid %d) stalled after step %d" % (rank, os.getpid(), step),
          file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


@contextlib.contextmanager
def file_size_limit(limit, on_exceed=signal.SIG_IGN):
    """Writes beyond ``limit`` bytes fail with EFBIG inside (``on_exceed``: SIGXFSZ's handler;
    SIG_DFL kills the process mid-write)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, on_exceed)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@contextlib.contextmanager
def during_graph_write(rank=0):
    """Context of the graph file's write."""
    if not planned("disk-full-in-graph", 0, rank):
        yield
        return
    print("fault injection: the graph file written under a 1024-byte file-size limit", file=sys.stderr, flush=True)
    with file_size_limit(1024):
        yield


@contextlib.contextmanager
def during_save(step, nbytes, rank=0):
    """Context of the checkpoint write of ``step`` (``nbytes``: the size of its variables)."""
    kill = planned("kill-in-save", step, rank)
    full = planned("disk-full-in-save", step, rank)
    if not (kill or full):
        yield
        return
    limit = max(1, int(nbytes) // 2)
    if kill:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    print("fault injection: checkpoint of step %d written under a %d-byte file-size limit (%s)" % (
        step, limit, "killed by SIGXFSZ mid-write" if kill else "the write fails"), file=sys.stderr, flush=True)
    with file_size_limit(limit, signal.SIG_DFL if kill else signal.SIG_IGN):
        yield
