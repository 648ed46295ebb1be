"""SIGINT and SIGTERM end a program with one line and the conventional status (128 + the
signal: 130, 143), not a traceback: the signal raises ``Interrupted`` in the main thread, the
program unwinds (every file it writes is written atomically, and partial adversarial sets are
removed), and its ``main`` prints the line."""
import contextlib
import signal


class Interrupted(Exception):
    def __init__(self, signum):
        self.signum = signum
        self.status = 128 + signum
        super().__init__("interrupted by %s" % signal.Signals(signum).name)


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def exit_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """Inside: these signals raise Interrupted (the previous handlers come back after)."""
    previous = {s: signal.signal(s, _raise) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
