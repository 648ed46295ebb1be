"""Decoding image files into uint8 BGR arrays without ever stopping a run.

The original implementation feeds BGR uint8 images (docs/ORIGINAL.md,
"Conventions"). A week-long training run or a 50,000-image evaluation must
not die on one bad file, and ImageNet has some: a few CMYK JPEGs, grayscale JPEGs, a PNG
named .JPEG; user directories add 16-bit and RGBA PNGs and files cut off by a failed copy.

:func:`read_image_bgr` reads the bytes with ``np.fromfile`` (which also takes paths that
``cv2.imread`` cannot, e.g. non-ASCII ones) and decodes them by their content, not their
extension (ImageNet has a PNG named .JPEG):

- JPEG data with ``cv2.IMREAD_COLOR``: exactly what the original's ``cv2.imread(path,
  cv2.IMREAD_COLOR)`` gives, EXIF orientation applied; grayscale JPEGs come out as 3 equal
  channels and CMYK JPEGs are converted to BGR by OpenCV's JPEG decoder. (Some OpenCV
  versions give CMYK's 4 channels with ``IMREAD_UNCHANGED``; a JPEG has no alpha, so that
  path would mistake K for alpha.)
- everything else with ``cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)``, then normalised:
  2-D grayscale or 1 channel -> 3 equal BGR channels; gray + alpha -> the gray channel as
  BGR; BGRA -> BGR with the alpha dropped (as ``IMREAD_COLOR`` does); 16-bit -> 8-bit by
  ``round(x / 257)`` (65535 -> 255; ``IMREAD_COLOR`` would truncate ``x >> 8``).

Files that cannot be read or decoded (corrupt, truncated, empty, not an image, an
unsupported sample type such as float TIFF) give ``None`` and are recorded in a
:class:`SkippedFiles` counter, which warns through tensorpack's logger once per file.
"""
import os
import threading

import cv2
import numpy as np
from tensorpack.utils import logger

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image_file(name):
    """True for names ending in a common image extension (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class SkippedFiles:
    """Counts the image files that were skipped, and warns once per file.

    ``count`` is the number of skips (a bad training image is skipped again every epoch),
    ``num_files`` the number of distinct files, ``reasons`` maps each file to why.
    Thread-safe. With multi-process decoding every worker process has its own counter.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.reasons = {}

    @property
    def num_files(self):
        return len(self.reasons)

    def record(self, path, reason):
        with self._lock:
            self.count += 1
            first = path not in self.reasons
            self.reasons[path] = reason
            total = len(self.reasons)
        if first:
            logger.warn("Skipping image %s: %s (%d file(s) skipped so far)" % (path, reason, total))

    def reset(self):
        with self._lock:
            self.count = 0
            self.reasons = {}


def _main_scan_start(buf):
    """Offset of the first start-of-scan (SOS) marker of a JPEG's main image, found by
    walking its marker segments (so an EXIF thumbnail's own scan is not mistaken for it);
    None if the segments end before any SOS."""
    n, pos = len(buf), 2
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        pos += 2 + (int(buf[pos + 2]) << 8 | int(buf[pos + 3]))
    return None


def jpeg_is_complete(data):
    """For JPEG data (bytes or uint8 array starting with FF D8): True when an end-of-image
    marker (FF D9) follows the main image's first scan. A file cut off anywhere after its
    header has none (entropy-coded data cannot contain FF D9). Recent OpenCV rejects such
    files itself; older versions decode them with the missing part filled in grey, which is
    why this check exists. Data after the end-of-image marker is allowed. Non-JPEG data, or
    JPEG data whose segments cannot be walked to a scan: True (the decoder decides).
    """
    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if buf[:2] != b"\xff\xd8":
        return True
    sos = _main_scan_start(buf)
    return sos is None or buf.find(b"\xff\xd9", sos) != -1


# Images larger than this are skipped before decoding (``--max-image-pixels``): ImageNet's
# largest training images have about 30 million pixels; a 20000 x 20000 PNG of a few hundred
# KB (a decompression bomb) would take 1.2 GB as BGR.
DEFAULT_MAX_PIXELS = 100_000_000


def image_size(buf):
    """(width, height) from the header of PNG, JPEG, GIF, BMP or WebP data, or None where the
    format is another (the decoder then decides alone)."""
    b = bytes(buf[:32]) if not isinstance(buf, bytes) else buf[:32]
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    if b[:6] in (b"GIF87a", b"GIF89a") and len(b) >= 10:
        return int.from_bytes(b[6:8], "little"), int.from_bytes(b[8:10], "little")
    if b[:2] == b"BM" and len(b) >= 26:
        return abs(int.from_bytes(b[18:22], "little", signed=True)), abs(int.from_bytes(b[22:26], "little",
                                                                                         signed=True))
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP" and len(b) >= 30:
        kind = b[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(b[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            return int.from_bytes(b[26:28], "little") & 0x3FFF, int.from_bytes(b[28:30], "little") & 0x3FFF
        return None
    full = bytes(buf) if not isinstance(buf, bytes) else buf
    if full[:2] == b"\xff\xd8":
        return _jpeg_size(full)
    return None


def _jpeg_size(buf):
    """(width, height) from a JPEG's first start-of-frame marker (SOF0..SOF15 but DHT, JPG
    and DAC), walking the marker segments as ``_main_scan_start`` does."""
    n, pos = len(buf), 2
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 <= n:
            return int(buf[pos + 7]) << 8 | int(buf[pos + 8]), int(buf[pos + 5]) << 8 | int(buf[pos + 6])
        if marker == 0xDA:
            return None
        pos += 2 + (int(buf[pos + 2]) << 8 | int(buf[pos + 3]))
    return None


def to_bgr_uint8(image):
    """Normalise a decoded image (any of OpenCV's IMREAD_UNCHANGED results) to uint8
    ``[H, W, 3]`` BGR; None for layouts or sample types it cannot convert."""
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3:
        return None
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 3:
        return np.ascontiguousarray(image)
    return None


def read_image_bgr(path, skipped=None, max_pixels=None):
    """Decode an image file to uint8 ``[H, W, 3]`` BGR, or return None (and record the file
    in ``skipped``, a :class:`SkippedFiles` of the caller's data source; without one, the skip
    is only logged) if it cannot be read or decoded, or its header says it has more than
    ``max_pixels`` pixels (default ``DEFAULT_MAX_PIXELS``): such a file is not decoded at all."""
    skipped = SkippedFiles() if skipped is None else skipped
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError) as e:
        skipped.record(path, "cannot be read (%s)" % (getattr(e, "strerror", None) or e))
        return None
    if buf.size == 0:
        skipped.record(path, "the file is empty")
        return None
    size = image_size(buf)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if size is not None and size[0] * size[1] > limit:
        skipped.record(path, "%d x %d pixels, more than the limit of %d (--max-image-pixels): not decoded" % (
            size[0], size[1], limit))
        return None
    if not jpeg_is_complete(buf):
        skipped.record(path, "truncated JPEG (no end-of-image marker)")
        return None
    is_jpeg = buf.size >= 2 and buf[0] == 0xFF and buf[1] == 0xD8
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        skipped.record(path, "cannot be decoded (corrupt, truncated or not an image)")
        return None
    converted = to_bgr_uint8(image)
    if converted is None:
        skipped.record(path, "unsupported image layout %s %s" % (image.dtype, image.shape))
    return converted
