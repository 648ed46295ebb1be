"""The one exception the data package raises for problems with the user's data.

A ``DataError`` is meant to be shown to the user as it is, on one line, by ``train.py`` and
``eval.py``: its message names the file or directory, what is wrong with it, and what to do
about it (for example "re-install dataset-fashion-mnist or point --data at the right
directory"). It is a ``ValueError``, so code that catches bad input generically still works.
"""


class DataError(ValueError):
    """A data set that cannot be used: missing, empty, malformed or inconsistent.

    The message is always a single line (any line breaks given are folded into spaces), so
    that a log line or a terminal shows the whole of it.
    """

    def __init__(self, message):
        message = " ".join(str(message).split())
        super().__init__(message)
