"""Tests of the data package: Fashion-MNIST IDX reading, ImageNet-style directories, robust
image decoding, augmentation/eval crops, sharding, and the DataFlows built on them.

All inputs are generated in tmp_path (tiny images); only the real Fashion-MNIST test reads
/usr/share/datasets/fashion-mnist, and is skipped only when that directory is absent.
"""
import gzip
import io
import os
import struct

import cv2
import numpy as np
import pytest

import data
from data import augment, fashion_mnist, images, sharding
from data.errors import DataError


# ----------------------------------------------------------------------------- helpers

def write_idx(path, array, magic=None, cut=0, extra=b""):
    """Write an IDX file of unsigned bytes (gzip-compressed if path ends in .gz)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw += array.tobytes() + extra
    if cut:
        raw = raw[:-cut]
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(str(path), "wb") as f:
        f.write(raw)
    return str(path)


def make_fashion_dir(root, n_train=7, n_test=3, gz=True, seed=0):
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        y = rng.randint(0, 10, size=n).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(root / ("%s-images-idx3-ubyte%s" % (prefix, ext)), x)
        # labels always in the other form, so one directory exercises both
        write_idx(root / ("%s-labels-idx1-ubyte%s" % (prefix, "" if gz else ".gz")), y)
        sets[prefix] = (x, y)
    return sets


def check_one_line(err):
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) > 20
    return msg


def save_image(path, image, params=()):
    ok, buf = cv2.imencode(os.path.splitext(str(path))[1], image, list(params))
    assert ok
    buf.tofile(str(path))
    return str(path)


def solid(value, h=30, w=40):
    """A uint8 BGR image of one colour (stays that colour through resize and crop)."""
    return np.full((h, w, 3), value, dtype=np.uint8)


def pattern(h=30, w=40, seed=0):
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, size=(h // 5 + 1, w // 5 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg_bytes(image, quality=95):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def make_imagenet(root, wnids=("n03000000", "n01000000", "n02000000"), per_class=2,
                  val_layout="subdirs", synset=True):
    """train/<wnid>/ with small JPEG/PNG files (mixed-case extensions, a stray .txt) and
    val/ with one solid-colour PNG per class, in either layout.
    Colours encode (class, index) so tests can tell images apart after resizing."""
    root.mkdir(parents=True, exist_ok=True)
    exts = (".JPEG", ".png", ".Jpg")
    for w in wnids:
        d = root / "train" / w
        d.mkdir(parents=True)
        for i in range(per_class):
            save_image(d / ("%s_%d%s" % (w, i, exts[i % len(exts)])), pattern(seed=i))
        (d / "notes.txt").write_text("not an image")
    sorted_w = sorted(wnids)
    val_items = []
    for k, w in enumerate(wnids):
        label = sorted_w.index(w)
        name = "ILSVRC2012_val_%08d.png" % (k + 1)
        val_items.append((name, label, w))
    if val_layout == "subdirs":
        for name, label, w in val_items:
            (root / "val" / w).mkdir(parents=True, exist_ok=True)
            save_image(root / "val" / w / name, solid(10 * (label + 1)))
    else:
        (root / "val").mkdir()
        for name, label, w in val_items:
            save_image(root / "val" / name, solid(10 * (label + 1)))
        target = root / "val" / "val.txt" if val_layout == "flat-in-val" else root / "val.txt"
        target.write_text("".join("%s %d\n" % (name, label) for name, label, _ in val_items))
    if synset:
        (root / "synset_words.txt").write_text(
            "".join("%s name of %s, other\n" % (w, w) for w in sorted_w))
    return sorted_w


def iterate(flow):
    flow.reset_state()
    return list(flow)


# ------------------------------------------------------------------------- errors module

def test_data_error_is_value_error_and_one_line():
    err = DataError("first line\nsecond   line")
    assert isinstance(err, ValueError)
    assert str(err) == "first line second line"


# -------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_reads_generated_gz_and_raw_idx(tmp_path):
    for gz in (True, False):
        d = tmp_path / ("gz" if gz else "raw")
        sets = make_fashion_dir(d, gz=gz)
        assert fashion_mnist.is_fashion_mnist_dir(str(d))
        assert data.detect_dataset(str(d)) == "fashion-mnist"
        for split, prefix in (("train", "train"), ("test", "t10k"), ("val", "t10k")):
            x, y = data.load_fashion_mnist(str(d), split)
            assert x.dtype == np.uint8 and x.shape == (len(sets[prefix][0]), 28, 28, 1)
            assert y.dtype == np.int32 and y.shape == (len(sets[prefix][1]),)
            np.testing.assert_array_equal(x[..., 0], sets[prefix][0])
            np.testing.assert_array_equal(y, sets[prefix][1])
    assert len(fashion_mnist.CLASS_NAMES) == 10
    assert fashion_mnist.CLASS_NAMES[0] == "T-shirt/top"
    assert fashion_mnist.CLASS_NAMES[9] == "Ankle boot"


def test_validation_split_holds_out_the_last_training_images(tmp_path):
    """--validation N: training reads the first images only, evaluation reads the last N
    training images (never the test set), and the two never share an image."""
    sets = make_fashion_dir(tmp_path)
    n = len(sets["train"][1])
    source = data.open_dataset("fashion-mnist", str(tmp_path), validation=3)
    (tx, ty), (vx, vy) = source.train_arrays, source.test_arrays
    assert len(ty) == n - 3 and len(vy) == 3 and source.num_train == n - 3 and source.num_eval() == 3
    np.testing.assert_array_equal(tx[..., 0], sets["train"][0][:n - 3])
    np.testing.assert_array_equal(vx[..., 0], sets["train"][0][n - 3:])
    np.testing.assert_array_equal(vy, sets["train"][1][n - 3:])
    plain = data.open_dataset("fashion-mnist", str(tmp_path))
    assert plain.num_train == n and len(plain.test_arrays[1]) == len(sets["t10k"][1])
    with pytest.raises(DataError, match="holds out every one"):
        _ = data.open_dataset("fashion-mnist", str(tmp_path), validation=n).train_arrays
    for kwargs in ({"fake": True}, {}):
        with pytest.raises(DataError, match="drop --validation"):
            data.open_dataset("fashion-mnist" if kwargs else "imagenet", str(tmp_path), validation=3, **kwargs)


def test_fashion_mnist_wrong_magic(tmp_path):
    make_fashion_dir(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(bad, np.zeros((7, 28, 28)), magic=0x1234)
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(str(tmp_path), "train")
    msg = check_one_line(err)
    assert str(bad) in msg and "0x1234" in msg and "0x803" in msg
    assert "dataset-fashion-mnist" in msg
    # a labels file given where images are expected is also a wrong magic
    write_idx(bad, np.zeros(7))
    with pytest.raises(DataError, match="magic 0x801, expected 0x803"):
        data.load_fashion_mnist(str(tmp_path), "train")


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"])
def test_fashion_mnist_truncated_file(tmp_path, name):
    make_fashion_dir(tmp_path, n_test=3)
    array = np.ones((3, 28, 28)) if "images" in name else np.ones(3)
    write_idx(tmp_path / name, array, cut=5)
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(str(tmp_path), "test")
    msg = check_one_line(err)
    assert "truncated" in msg and name in msg


def test_fashion_mnist_extra_bytes_and_broken_gzip(tmp_path):
    make_fashion_dir(tmp_path, n_test=3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.ones((3, 28, 28)), extra=b"xyz")
    with pytest.raises(DataError, match="3 more than"):
        data.load_fashion_mnist(str(tmp_path), "test")
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(path, np.ones((3, 28, 28)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a cut-off gzip stream
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(str(tmp_path), "test")
    assert "cannot be read" in check_one_line(err)


def test_fashion_mnist_count_mismatch_wrong_size_and_label_range(tmp_path):
    make_fashion_dir(tmp_path, n_train=7)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6))
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(str(tmp_path), "train")
    msg = check_one_line(err)
    assert "7 images" in msg and "6 labels" in msg

    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(7, 10))
    with pytest.raises(DataError, match="label 10 at index 0"):
        data.load_fashion_mnist(str(tmp_path), "train")

    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((7, 32, 32)))
    with pytest.raises(DataError, match="32x32, expected 28x28"):
        data.load_fashion_mnist(str(tmp_path), "train")


def test_fashion_mnist_missing_directory_and_files(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(str(tmp_path / "nope"))
    msg = check_one_line(err)
    assert "does not exist" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "--data" in msg

    make_fashion_dir(tmp_path)
    os.remove(str(tmp_path / "t10k-labels-idx1-ubyte"))
    assert not fashion_mnist.is_fashion_mnist_dir(str(tmp_path))
    data.load_fashion_mnist(str(tmp_path), "train")  # the train split is complete
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(str(tmp_path), "test")
    msg = check_one_line(err)
    assert "t10k-labels-idx1-ubyte[.gz]" in msg and "apt-get install dataset-fashion-mnist" in msg
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        data.load_fashion_mnist(str(tmp_path), "validation")


REAL_FASHION = fashion_mnist.DEFAULT_DIR


def test_real_fashion_mnist():
    # not skipped when absent: the suite needs the real data (scripts/setup.sh installs it)
    assert os.path.isdir(REAL_FASHION), "%s absent: apt-get install dataset-fashion-mnist" % REAL_FASHION
    assert data.detect_dataset(REAL_FASHION) == "fashion-mnist"
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = data.load_fashion_mnist(REAL_FASHION, split)
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int32
        assert y.min() == 0 and y.max() == 9
        # the data set is balanced: n/10 images per class
        np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, n // 10))
        assert 0 < x.mean() < 255 and x.max() == 255


# ------------------------------------------------------------------ Fashion-MNIST flows

def indexed_images(n):
    """Image i holds i+1 at the top-left pixel (top-right once flipped), zero elsewhere."""
    x = np.zeros((n, 28, 28, 1), np.uint8)
    x[np.arange(n), 0, 0, 0] = np.arange(1, n + 1)
    return x, (np.arange(n) % 10).astype(np.int32)


def decode_indices(batch_images):
    left, right = batch_images[:, 0, 0, 0].astype(int), batch_images[:, 0, 27, 0].astype(int)
    return left + right - 1, right > 0


def test_fashion_train_flow_shards_shuffle_and_flip():
    x, y = indexed_images(24)
    seen = []
    for shard in range(3):
        flow = data.fashion_train_flow(x, y, batch=4, shard_index=shard, num_shards=3,
                                       flip=False, seed=5)
        assert len(flow) == 2
        batches = iterate(flow)
        assert len(batches) == 2
        for pixels, labels in batches:
            assert pixels.shape == (4, 28, 28, 1) and pixels.dtype == np.uint8
            assert labels.dtype == np.int32
            idx, flipped = decode_indices(pixels)
            assert not flipped.any()
            np.testing.assert_array_equal(labels, idx % 10)
            seen.extend(idx.tolist())
    assert sorted(seen) == list(range(24))  # disjoint and complete

    # shuffled, reproducible with a seed, different between passes
    flow = data.fashion_train_flow(x, y, batch=24, flip=False, seed=1)
    flow.reset_state()
    first, second = [decode_indices(next(iter(flow))[0])[0] for _ in range(2)]
    assert sorted(first) == list(range(24)) and not np.array_equal(first, np.arange(24))
    assert not np.array_equal(first, second)
    again = data.fashion_train_flow(x, y, batch=24, flip=False, seed=1)
    np.testing.assert_array_equal(decode_indices(iterate(again)[0][0])[0], first)

    # flips: some images flipped (the label follows the image), none without flip
    flow = data.fashion_train_flow(x, y, batch=24, flip=True, seed=2)
    images, labels = iterate(flow)[0]
    idx, flipped = decode_indices(images)
    assert 0 < flipped.sum() < 24
    np.testing.assert_array_equal(labels, idx % 10)

    with pytest.raises(DataError, match="fewer than one batch"):
        data.fashion_train_flow(x, y, batch=16, shard_index=0, num_shards=2)
    # remainder dropped
    assert [len(b[1]) for b in iterate(data.fashion_train_flow(x, y, batch=10))] == [10, 10]


def test_fashion_eval_flow_order_remainder_shards_and_limit():
    x, y = indexed_images(10)
    batches = iterate(data.fashion_eval_flow(x, y, batch=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    idx = np.concatenate([decode_indices(b[0])[0] for b in batches])
    np.testing.assert_array_equal(idx, np.arange(10))  # deterministic order, no flips
    union = []
    for shard in range(3):
        flow = data.fashion_eval_flow(x, y, batch=3, shard_index=shard, num_shards=3, limit=8)
        got = np.concatenate([decode_indices(b[0])[0] for b in iterate(flow)])
        np.testing.assert_array_equal(got, np.arange(shard, 8, 3))
        union.extend(got.tolist())
    assert sorted(union) == list(range(8))
    with pytest.raises(DataError):
        data.fashion_eval_flow(x, y, batch=4, shard_index=3, num_shards=3)
    with pytest.raises(DataError, match="uint8"):
        data.fashion_eval_flow(x.astype(np.float32), y, batch=4)


# ----------------------------------------------------------------------------- sharding

@pytest.mark.parametrize("count,num_shards", [(0, 1), (1, 3), (10, 3), (12, 4), (7, 8)])
def test_shards_are_disjoint_and_complete(count, num_shards):
    items = list(range(count))
    shards = [sharding.shard_items(items, i, num_shards) for i in range(num_shards)]
    flat = [x for s in shards for x in s]
    assert sorted(flat) == items and len(flat) == len(set(flat))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    assert [list(sharding.shard_indices(count, i, num_shards)) for i in range(num_shards)] == shards


def test_shard_arguments_and_steps_per_epoch():
    for bad in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(DataError):
            sharding.shard_items([1, 2, 3], *bad)
    assert sharding.steps_per_epoch(1281167, 32, 128) == 312
    assert sharding.steps_per_epoch(5, 32, 2) == 1


# --------------------------------------------------------------------------------- fake

def test_fake_flow_shapes_dtypes_and_seed():
    flow = data.fake_flow(3, image_size=20, channels=1, num_classes=7, seed=4, size=5)
    batches = iterate(flow)
    assert len(batches) == len(flow) == 5
    for pixels, labels in batches:
        assert pixels.shape == (3, 20, 20, 1) and pixels.dtype == np.uint8
        assert labels.shape == (3,) and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < 7
    assert not np.array_equal(batches[0][0], batches[1][0])
    again = iterate(data.fake_flow(3, 20, 1, 7, seed=4, size=5))
    np.testing.assert_array_equal(again[4][0], batches[4][0])
    fixed = iterate(data.fake_flow(2, 8, 3, 10, seed=0, size=3, fixed=True))
    assert fixed[0][0] is fixed[2][0]


# ---------------------------------------------------------------------- ImageNet listing

def test_imagenet_subdir_layout_sorted_wnids_and_names(tmp_path):
    wnids = make_imagenet(tmp_path)
    assert wnids == ["n01000000", "n02000000", "n03000000"]
    assert data.is_imagenet_dir(str(tmp_path)) and data.detect_dataset(str(tmp_path)) == "imagenet"
    items, names = data.list_imagenet(str(tmp_path), "train")
    assert names == ["name of %s, other" % w for w in wnids]
    assert len(items) == 6  # notes.txt ignored, .JPEG/.png/.Jpg accepted
    for path, label in items:
        assert os.path.basename(os.path.dirname(path)) == wnids[label]
        assert os.path.isfile(path)
    items2, _ = data.list_imagenet(str(tmp_path), "train")
    assert items2 == items  # deterministic
    val, _ = data.list_imagenet(str(tmp_path), "val")
    assert [os.path.basename(p) for p, _ in val] == [
        "ILSVRC2012_val_%08d.png" % k for k in (1, 2, 3)]
    # created in the order n03, n01, n02: labels are the sorted positions
    assert [label for _, label in val] == [2, 0, 1]

    os.remove(str(tmp_path / "synset_words.txt"))
    assert data.list_imagenet(str(tmp_path), "val")[1] == wnids  # names fall back to wnids


@pytest.mark.parametrize("layout", ["flat-in-val", "flat-in-root"])
def test_imagenet_flat_val_with_val_txt(tmp_path, layout):
    wnids = make_imagenet(tmp_path, val_layout=layout)
    assert data.is_imagenet_dir(str(tmp_path))
    items, names = data.list_imagenet(str(tmp_path), "val")
    assert [(os.path.basename(p), label) for p, label in items] == [
        ("ILSVRC2012_val_00000001.png", 2), ("ILSVRC2012_val_00000002.png", 0),
        ("ILSVRC2012_val_00000003.png", 1)]
    assert names == ["name of %s, other" % w for w in wnids]


def test_imagenet_val_without_train_uses_synset_words(tmp_path):
    (tmp_path / "val" / "n02000000").mkdir(parents=True)
    save_image(tmp_path / "val" / "n02000000" / "a.png", solid(5))
    (tmp_path / "synset_words.txt").write_text("n01000000 one\nn03000000 three\nn02000000 two\n")
    items, names = data.list_imagenet(str(tmp_path), "val")
    assert names == ["one", "two", "three"] and items[0][1] == 1


def test_imagenet_val_txt_missing_files_and_bad_labels(tmp_path):
    make_imagenet(tmp_path, val_layout="flat-in-val")
    txt = tmp_path / "val" / "val.txt"
    good = txt.read_text()
    txt.write_text(good + "ILSVRC2012_val_00000009.png 1\nILSVRC2012_val_00000010.png 0\n")
    with pytest.raises(DataError) as err:
        data.list_imagenet(str(tmp_path), "val")
    msg = check_one_line(err)
    assert "2 file(s) that do not exist" in msg and "ILSVRC2012_val_00000009.png" in msg
    assert "line 4" in msg

    txt.write_text(good + "ILSVRC2012_val_00000001.png 3\n")
    with pytest.raises(DataError) as err:
        data.list_imagenet(str(tmp_path), "val")
    assert "label 3, outside [0, 3)" in check_one_line(err)

    txt.write_text("ILSVRC2012_val_00000001.png two\n")
    with pytest.raises(DataError, match="not 'filename label'"):
        data.list_imagenet(str(tmp_path), "val")
    txt.write_text("ILSVRC2012_val_00000001.png 1\nILSVRC2012_val_00000001.png 1\n")
    with pytest.raises(DataError, match="a second time"):
        data.list_imagenet(str(tmp_path), "val")


def test_imagenet_directory_errors(tmp_path):
    with pytest.raises(DataError) as err:
        data.list_imagenet(str(tmp_path / "missing"))
    assert "does not exist" in check_one_line(err)
    with pytest.raises(DataError) as err:
        data.list_imagenet(str(tmp_path), "train")
    assert "no train/ subdirectory" in check_one_line(err)
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError) as err:
        data.list_imagenet(str(tmp_path), "val")
    assert "is empty" in check_one_line(err)
    save_image(tmp_path / "val" / "x.png", solid(1))
    with pytest.raises(DataError) as err:
        data.list_imagenet(str(tmp_path), "val")
    msg = check_one_line(err)
    assert "neither class subdirectories" in msg and "val.txt" in msg
    assert not data.is_imagenet_dir(str(tmp_path))
    with pytest.raises(DataError) as err:
        data.detect_dataset(str(tmp_path))
    assert "neither a Fashion-MNIST" in check_one_line(err)
    with pytest.raises(DataError, match="does not exist"):
        data.detect_dataset(str(tmp_path / "missing"))
    (tmp_path / "train" / "n01000000").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        data.list_imagenet(str(tmp_path), "train")
    (tmp_path / "val" / "n09999999").mkdir()
    save_image(tmp_path / "val" / "n09999999" / "y.png", solid(1))
    with pytest.raises(DataError, match="not among the classes"):
        data.list_imagenet(str(tmp_path), "val")


# --------------------------------------------------------------------------- decoding

@pytest.fixture
def warnings_log(monkeypatch):
    calls = []

    class FakeLogger:
        def warn(self, msg):
            calls.append(msg)

    monkeypatch.setattr(images, "logger", FakeLogger())
    return calls


def test_read_image_bgr_conversions_and_skips(tmp_path, warnings_log):
    color = pattern(seed=3)
    gray = color[:, :, 1].copy()
    paths = {
        "ok.jpg": save_image(tmp_path / "ok.jpg", color),
        "gray.png": save_image(tmp_path / "gray.png", gray),
        "deep.png": save_image(tmp_path / "deep.png", gray.astype(np.uint16) * 257 + 100),
        "bgra.png": save_image(tmp_path / "bgra.png",
                               np.dstack([color, np.full(color.shape[:2], 7, np.uint8)])),
    }
    full = jpeg_bytes(color)
    (tmp_path / "truncated.jpg").write_bytes(full[: len(full) * 2 // 3])
    (tmp_path / "corrupt.jpg").write_bytes(full[:20] + b"\x00garbage" * 50)
    (tmp_path / "empty.png").write_bytes(b"")
    skipped = images.SkippedFiles()
    for name in ("truncated.jpg", "corrupt.jpg", "empty.png", "absent.png"):
        assert data.read_image_bgr(str(tmp_path / name), skipped) is None
    assert skipped.count == skipped.num_files == 4
    assert data.read_image_bgr(str(tmp_path / "corrupt.jpg"), skipped) is None
    assert skipped.count == 5 and skipped.num_files == 4  # counted again, warned once
    assert len(warnings_log) == 4 and all("Skipping image" in w for w in warnings_log)
    assert "truncated" in skipped.reasons[str(tmp_path / "truncated.jpg")]

    out = {name: data.read_image_bgr(path, skipped) for name, path in paths.items()}
    for name, image in out.items():
        assert image.dtype == np.uint8 and image.shape == (30, 40, 3), name
    assert np.abs(out["ok.jpg"].astype(int) - color).mean() < 8
    for name in ("gray.png", "deep.png"):
        for c in range(3):
            np.testing.assert_array_equal(out[name][:, :, c], gray)  # 16-bit: round(x / 257)
    np.testing.assert_array_equal(out["bgra.png"], color)
    assert skipped.count == 5  # nothing good was skipped


def test_read_image_bgr_cmyk_jpeg(tmp_path):
    from PIL import Image        # installed with matplotlib (setup.cfg)
    color = pattern(seed=4)
    buf = io.BytesIO()
    Image.fromarray(color[:, :, ::-1].copy()).convert("CMYK").save(buf, "JPEG", quality=95)
    (tmp_path / "cmyk.jpg").write_bytes(buf.getvalue())
    image = data.read_image_bgr(str(tmp_path / "cmyk.jpg"), images.SkippedFiles())
    assert image is not None and image.dtype == np.uint8 and image.shape == (30, 40, 3)
    assert np.abs(image.astype(int) - color).mean() < 8  # BGR, not RGB or inverted


def test_read_image_bgr_jpeg_like_original_imread_and_by_content(tmp_path):
    """JPEGs decode exactly as the original's cv2.imread(path, IMREAD_COLOR): EXIF
    orientation applied, grayscale JPEGs as 3 channels; a PNG named .JPEG still decodes."""
    from PIL import Image        # installed with matplotlib (setup.cfg)
    color = pattern(seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(color[:, :, ::-1].copy()).save(str(tmp_path / "rot.jpg"), "JPEG", exif=exif)
    save_image(tmp_path / "gray.jpg", color[:, :, 0].copy())
    save_image(tmp_path / "png_named.JPEG.png", color)
    os.rename(str(tmp_path / "png_named.JPEG.png"), str(tmp_path / "png_named.JPEG"))
    skipped = images.SkippedFiles()
    for name in ("rot.jpg", "gray.jpg"):
        path = str(tmp_path / name)
        image = data.read_image_bgr(path, skipped)
        np.testing.assert_array_equal(image, cv2.imread(path, cv2.IMREAD_COLOR))
    assert data.read_image_bgr(str(tmp_path / "rot.jpg"), skipped).shape == (40, 30, 3)
    np.testing.assert_array_equal(data.read_image_bgr(str(tmp_path / "png_named.JPEG"), skipped),
                                  color)
    assert skipped.count == 0


def test_jpeg_completeness_check():
    full = jpeg_bytes(pattern())
    assert images.jpeg_is_complete(full)
    assert images.jpeg_is_complete(full + b"trailing data after EOI")
    assert not images.jpeg_is_complete(full[:-2])
    assert not images.jpeg_is_complete(full[: len(full) - 40])
    assert images.jpeg_is_complete(b"\x89PNG not a jpeg")


def test_to_bgr_uint8_layouts():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert images.to_bgr_uint8(g[:, :, None]).shape == (3, 4, 3)
    two = images.to_bgr_uint8(np.dstack([g, g * 0]))
    np.testing.assert_array_equal(two[:, :, 2], g)
    assert images.to_bgr_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert images.to_bgr_uint8(np.zeros((2, 2, 3), np.float32)) is None
    assert images.to_bgr_uint8(np.zeros((2, 2, 5), np.uint8)) is None


# ---------------------------------------------------------------------- augmentation

def test_pca_constants_are_bgr():
    np.testing.assert_allclose(augment.PCA_EIGVEC_BGR[0], [-0.5836, -0.6948, 0.4203])
    np.testing.assert_allclose(augment.PCA_EIGVEC_BGR[2], [-0.5675, 0.7192, 0.4009])
    np.testing.assert_allclose(augment.PCA_EIGVAL, [0.2175, 0.0188, 0.0045])
    assert augment.eval_resize_size(224) == 256 and augment.eval_resize_size(32) == 37


def test_train_augmentors_follow_fb_resnet_torch():
    from tensorpack.dataflow import imgaug
    crop, to_float, jitter, lighting, flip = augment.train_augmentors(224)
    assert isinstance(crop, imgaug.GoogleNetRandomCropAndResize)
    assert crop.crop_area_fraction == (0.08, 1.0) and crop.target_shape == 224
    np.testing.assert_allclose(crop.aspect_ratio_range, (0.75, 4.0 / 3.0))
    assert crop.interp == cv2.INTER_CUBIC
    assert isinstance(to_float, imgaug.ToFloat32)
    assert isinstance(jitter, imgaug.RandomOrderAug)
    kinds = {type(a): a for a in jitter.aug_lists}
    assert set(kinds) == {imgaug.BrightnessScale, imgaug.Contrast, imgaug.Saturation}
    np.testing.assert_allclose(kinds[imgaug.BrightnessScale].range, (0.6, 1.4))
    np.testing.assert_allclose(kinds[imgaug.Contrast].factor_range, (0.6, 1.4))
    assert kinds[imgaug.Saturation].alpha == 0.4
    assert kinds[imgaug.Contrast].rgb is False and kinds[imgaug.Saturation].rgb is False
    assert isinstance(lighting, imgaug.Lighting) and lighting.std == 0.1
    np.testing.assert_allclose(lighting.eigval, augment.PCA_EIGVAL * 255, rtol=1e-6)
    np.testing.assert_allclose(lighting.eigvec, augment.PCA_EIGVEC_BGR)
    assert isinstance(flip, imgaug.Flip) and flip.horiz and not flip.vert and flip.prob == 0.5


def test_train_augmentation_shape_dtype_and_variety(tmp_path, warnings_log):
    augmentors = augment.train_augmentors(32)
    outs = []
    for _ in range(4):
        x = pattern(seed=1)
        for aug in augmentors:
            x = aug.augment(x)
        assert x.shape == (32, 32, 3) and x.dtype == np.float32  # no clipping before the end
        outs.append(augment.to_uint8(x))
    assert all(o.dtype == np.uint8 and o.shape == (32, 32, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) == 4  # random crops / jitter differ
    # the mapper decodes, augments, rounds and clips once, and gives int32 labels
    path = save_image(tmp_path / "x.png", pattern(seed=1))
    mapper = augment.ImageMapper(augment.train_augmentors(32), seed=0)
    image, label = mapper((path, 5))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert label == 5 and isinstance(label, np.int32)
    assert mapper((str(tmp_path / "absent.png"), 5)) is None
    mapper.keep_failed = True
    assert mapper((str(tmp_path / "absent.png"), 5)) == [None, 5]
    rounded = augment.to_uint8(np.array([-3.0, 0.4, 0.6, 254.5, 300.0]))
    assert rounded.dtype == np.uint8 and rounded.tolist() == [0, 0, 1, 254, 255]


def test_eval_crop_matches_resize_then_center_crop(tmp_path):
    """40x30 (w x h) -> shortest edge round(24*256/224)=27 -> 36x27 -> centre 24x24."""
    (tmp_path / "val" / "n01").mkdir(parents=True)
    image = pattern(seed=2)
    save_image(tmp_path / "val" / "n01" / "a.png", image)
    (tmp_path / "val" / "n01" / "b.png").write_bytes(b"not a png")  # skipped
    batches = iterate(data.imagenet_eval_flow(str(tmp_path), batch=4, image_size=24))
    assert len(batches) == 1
    images_, labels = batches[0]
    assert images_.shape == (1, 24, 24, 3) and images_.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.tolist() == [0]
    resized = cv2.resize(image, (36, 27), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(images_[0], resized[1:25, 6:30])


# ------------------------------------------------------------------------ ImageNet flows

def make_eval_set(root, n=7, corrupt=(3,)):
    """val/<wnid>/ with n solid-colour PNGs (colour 20*(i+1)) over 3 classes, some corrupt."""
    wnids = ["n01", "n02", "n03"]
    expected = {}
    for i in range(n):
        label = i % 3
        d = root / "val" / wnids[label]
        d.mkdir(parents=True, exist_ok=True)
        path = d / ("img_%02d.png" % i)
        if i in corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00")  # cut in IHDR
        else:
            save_image(path, solid(20 * (i + 1)))
            expected[20 * (i + 1)] = label
    return expected


def flow_colours(batches):
    seen = []
    for images_, labels in batches:
        for image, label in zip(images_, labels):
            assert (image == image[0, 0]).all()
            seen.append((int(image[0, 0, 0]), int(label)))
    return seen


@pytest.mark.parametrize("parallel", [1, 2])
def test_eval_flow_sees_every_image_once_with_remainder(tmp_path, parallel):
    expected = make_eval_set(tmp_path, n=8)
    batches = iterate(data.imagenet_eval_flow(str(tmp_path), batch=3, image_size=16,
                                              parallel=parallel))
    sizes = [len(b[1]) for b in batches]
    assert sum(sizes) == 7 and all(s == 3 for s in sizes[:-1]) and sizes[-1] >= 1
    assert all(b[0].shape[1:] == (16, 16, 3) and b[0].dtype == np.uint8 for b in batches)
    seen = flow_colours(batches)
    assert sorted(seen) == sorted(expected.items())  # each valid image exactly once
    again = flow_colours(iterate(data.imagenet_eval_flow(str(tmp_path), 3, image_size=16,
                                                         parallel=parallel)))
    assert sorted(again) == sorted(seen)


def test_eval_flow_shards_and_limit(tmp_path):
    expected = make_eval_set(tmp_path, n=9, corrupt=())
    union = []
    for shard in range(2):
        flow = data.imagenet_eval_flow(str(tmp_path), 2, shard_index=shard, num_shards=2,
                                       image_size=8)
        first = flow_colours(iterate(flow))
        assert first == flow_colours(iterate(flow))  # deterministic shard and order
        union.extend(first)
    assert sorted(union) == sorted(expected.items()) and len(union) == len(set(union))
    limited = flow_colours(iterate(data.imagenet_eval_flow(str(tmp_path), 4, image_size=8,
                                                           limit=5)))
    items, _ = data.list_imagenet(str(tmp_path), "val")
    assert len(limited) == 5
    assert [c for c, _ in limited] == [20 * (int(os.path.basename(p)[4:6]) + 1)
                                       for p, _ in items[:5]]


def test_train_flow_batches_shards_and_skips(tmp_path, warnings_log):
    make_imagenet(tmp_path, per_class=3)
    bad = tmp_path / "train" / "n02000000" / "broken.JPEG"
    bad.write_bytes(jpeg_bytes(pattern())[:200])
    skipped = images.SkippedFiles()
    flow = data.imagenet_train_flow(str(tmp_path), batch=1, parallel=1, image_size=32, seed=3, skipped=skipped)
    batches = iterate(flow)
    assert len(flow) == 10 and len(batches) == 9  # the broken file is dropped, flow goes on
    for images_, labels in batches:
        assert images_.shape == (1, 32, 32, 3) and images_.dtype == np.uint8
        assert labels.shape == (1,) and labels.dtype == np.int32
    assert sorted(int(b[1][0]) for b in batches) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert any(str(bad) in w for w in warnings_log)
    assert str(bad) in skipped.reasons and skipped.num_files == 1

    again = iterate(data.imagenet_train_flow(str(tmp_path), 1, parallel=1, image_size=32, seed=3))
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a[0], b[0])  # same seed, same batches

    flows = [data.imagenet_train_flow(str(tmp_path), 2, shard_index=i, num_shards=2,
                                      parallel=1, image_size=16, seed=0) for i in range(2)]
    assert [len(f) for f in flows] == [2, 2]  # shards of 5 items, remainder dropped
    assert [len(b[1]) for b in iterate(flows[0])] == [2, 2]
    with pytest.raises(DataError, match="fewer than one batch"):
        data.imagenet_train_flow(str(tmp_path), 11, parallel=1)


@pytest.mark.slow
def test_train_flow_multiprocess_decoding(tmp_path):
    make_imagenet(tmp_path, per_class=2)
    flow = data.imagenet_train_flow(str(tmp_path), batch=2, parallel=2, image_size=16, seed=1)
    flow.reset_state()
    it = iter(flow)
    try:
        for _ in range(4):  # more than one pass: the parallel flow repeats
            images_, labels = next(it)
            assert images_.shape == (2, 16, 16, 3) and images_.dtype == np.uint8
            assert labels.dtype == np.int32 and set(labels.tolist()) <= {0, 1, 2}
    finally:
        del it
        flow.ds.__del__()


def test_black_box_directory_flow_order_resize_and_skip(tmp_path, warnings_log):
    d = tmp_path / "adv"
    d.mkdir()
    imgs = {"b.png": pattern(seed=1), "a.png": pattern(seed=2), "C.PNG": pattern(seed=3)}
    for name, image in imgs.items():
        save_image(d / name, image)
    (d / "d.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    (d / "readme.txt").write_text("x")
    (d / "sub").mkdir()
    save_image(d / "sub" / "e.png", pattern())
    batches = iterate(data.black_box_directory_flow(str(d), batch=2, image_size=20))
    names = [n for b in batches for n in b[1]]
    assert names == ["C.PNG", "a.png", "b.png"]  # sorted, corrupt d.jpg skipped
    assert [len(b[1]) for b in batches] == [2, 1]
    out = np.concatenate([b[0] for b in batches])
    assert out.shape == (3, 20, 20, 3) and out.dtype == np.uint8
    for image, name in zip(out, names):
        np.testing.assert_array_equal(
            image, cv2.resize(imgs[name], (20, 20), interpolation=cv2.INTER_CUBIC))
    assert any("d.jpg" in w for w in warnings_log)
    with pytest.raises(DataError, match="no image files"):
        data.black_box_directory_flow(str(tmp_path), 2)
    with pytest.raises(DataError, match="does not exist"):
        data.black_box_directory_flow(str(tmp_path / "none"), 2)
