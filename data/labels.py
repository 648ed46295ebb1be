"""The one format of label and prediction files: ``filename,label`` lines, CSV with the
filename quoted when it needs it (a comma, a quote, leading or trailing spaces), so any
filename round-trips: ``eval.py --prediction-file`` writes it, ``--labels`` reads it, and
``--save-adversarial`` writes its ``labels.txt`` in it. The original release's lines,
``filename label`` separated by white space, are read too (the label is the last field).
"""
import csv
import io

from .errors import DataError


def write_labels(path, pairs):
    """(filename, label) pairs to ``path``, atomically."""
    from core.files import atomic_write
    text = format_labels(pairs)
    atomic_write(path, lambda f: f.write(text), mode="w")


def format_labels(pairs):
    """The text of ``write_labels`` (standard output, when no file is given)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for name, label in pairs:
        writer.writerow([name, int(label)])
    return buffer.getvalue()


def read_labels(path, num_classes=None):
    """{filename: label} of a labels file. One line naming the problem and the fix for a file
    that is missing, not text, empty, names an image twice, or holds a label that is not an
    integer (or, given ``num_classes``, outside [0, num_classes))."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except IsADirectoryError:
        raise DataError("--labels %s is a directory: pass the labels file (filename,label lines)" % path) from None
    except FileNotFoundError:
        raise DataError("--labels %s does not exist: pass the labels file (filename,label lines)" % path) from None
    except UnicodeDecodeError:
        raise DataError("--labels %s is not a text file: pass the labels file (filename,label lines)" % path) from None
    except OSError as e:
        raise DataError("--labels %s cannot be read (%s): pass a readable labels file" % (path, e.strerror)) from None
    if "\0" in text:
        raise DataError("--labels %s is not a text file: pass the labels file (filename,label lines)" % path)
    labels, lines = {}, {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) == 1:                              # the original's "filename label"
            row = row[0].rsplit(None, 1)
        if len(row) != 2 or not row[1].strip().lstrip("-").isdigit():
            raise DataError("%s line %d is not 'filename,label': fix the labels file" % (path, lineno))
        name, label = row[0], int(row[1])
        if name in labels:
            raise DataError("%s names %s twice (lines %d and %d): keep one label per image" % (
                path, name, lines[name], lineno))
        if num_classes is not None and not 0 <= label < num_classes:
            raise DataError("%s line %d gives %s the label %d, outside the model's classes 0..%d: fix the labels "
                            "file" % (path, lineno, name, label, num_classes - 1))
        labels[name], lines[name] = label, lineno
    if not labels:
        raise DataError("--labels %s holds no labels: pass the labels file (filename,label lines)" % path)
    return labels
