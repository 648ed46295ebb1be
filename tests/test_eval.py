"""eval.py white-box and black-box modes, strict loading, export, distribution."""
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from evaluation import blackbox, records, session
from evaluation.predictor import Predictor
from model import checkpoint
from helpers import PYTHON, REPO, horovodrun, run
from nets import ArchSpec, DenoiseSpec, backbone_logits
from nets.infer import infer_arch

tfv1 = tf.compat.v1
FMNIST = "/usr/share/datasets/fashion-mnist"


def make_checkpoint(path, spec, seed=0, record_arch=True):
    """Random weights (non-trivial BN) saved as train.py would."""
    g = tf.Graph()
    with g.as_default(), TowerContext("", is_training=False):
        tfv1.set_random_seed(seed)
        backbone_logits(tfv1.placeholder(tf.float32, [None, spec.image_size, spec.image_size,
                                                      spec.image_channels]), spec)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            params = checkpoint.session_params(sess, g)
    rng = np.random.RandomState(seed)
    for k in params:
        if k.endswith("gamma"):
            params[k] = rng.uniform(0.5, 1.5, params[k].shape).astype("float32")
        if k == "linear/W":
            params[k] = (rng.randn(*params[k].shape) * 0.3).astype("float32")
    checkpoint.save_npz(str(path), params, spec.to_dict() if record_arch else None)
    return params


SMALL = ArchSpec("small", 14, num_classes=10, image_size=28, image_channels=1, width=4,
                 denoise=DenoiseSpec("nonlocal"))


@pytest.fixture(scope="module")
def model_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    make_checkpoint(path, SMALL)
    return path


def eval_py(*args, check=True):
    return run([PYTHON, REPO / "eval.py"] + list(args), check=check, timeout=600)


def test_white_box_cli_writes_table_json_and_plot(model_npz, tmp_path):
    out = eval_py("--load", model_npz, "--data", FMNIST, "--attack-iter", "0,2,4", "--limit", "30",
                  "--batch", "16", "--json-out", tmp_path / "r.json", "--plot-out", tmp_path / "c.png", "--quiet")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["white_box"]) == {"clean", "pgd2", "pgd4"}
    for r in doc["white_box"].values():
        assert r["num_images"] == 30
        low, high = r["top1_error_ci95"]                            # Wilson's, never of width 0
        assert 0 <= low < high <= 1 and low <= r["top1_error"] <= high
    assert doc["arch"]["denoise"]["op"] == "nonlocal"            # read from the checkpoint, no flags
    assert "pgd4" in out.stdout and (tmp_path / "c.png").stat().st_size > 1000


@pytest.mark.parametrize("damage, words", [
    ("missing", ["1 missing", "group1/block0/conv2/W"]),
    ("extra", ["1 unexpected", "extra/W"]),
    ("shape", ["1 mis-shaped", "linear/b"]),
])
def test_a_checkpoint_that_does_not_fit_fails_with_the_list(model_npz, tmp_path, damage, words):
    params, arch = checkpoint.read_checkpoint(str(model_npz))
    if damage == "missing":
        del params["group1/block0/conv2/W"]
    elif damage == "extra":
        params["extra/W"] = np.zeros(3, np.float32)
    else:
        params["linear/b"] = np.zeros(11, np.float32)
    bad = tmp_path / "bad.npz"
    checkpoint.save_npz(str(bad), params, arch)
    proc = eval_py("--load", bad, "--data", FMNIST, "--attack-iter", "0", "--limit", "8", check=False)
    assert proc.returncode == 2
    for w in words:
        assert w in proc.stdout, proc.stdout[-2000:]


def test_distributed_evaluation_equals_a_single_process(model_npz, tmp_path):
    """Targeted PGD with a random start: the targets and starts are drawn per image from
    --seed and the image, so two ranks with another --batch give one process's figures."""
    args = ["--load", model_npz, "--data", FMNIST, "--attack", "pgd", "--attack-iter", "0,2", "--limit", "50",
            "--quiet"]
    eval_py(*args, "--batch", "8", "--json-out", tmp_path / "one.json", "--per-image", tmp_path / "one.npz",
            "--save-adversarial", tmp_path / "adv1")
    horovodrun(2, [REPO / "eval.py"] + args + ["--batch", "5", "--json-out", tmp_path / "two.json",
                                               "--per-image", tmp_path / "two.npz",
                                               "--save-adversarial", tmp_path / "adv2"], timeout=600)
    one = json.loads((tmp_path / "one.json").read_text())["white_box"]
    two = json.loads((tmp_path / "two.json").read_text())["white_box"]
    assert json.loads((tmp_path / "two.json").read_text())["workers"] == 2
    for name in ("clean", "pgd2"):
        assert two[name]["num_images"] == 50
        for m in ("top1_error", "top5_error", "attack_success"):
            assert two[name][m] == pytest.approx(one[name][m], abs=1e-12), (name, m)
    # rank 0 wrote the per-image file of one process: every image in its place
    labels1, per_image1 = records.load_per_image(str(tmp_path / "one.npz"))
    labels2, per_image2 = records.load_per_image(str(tmp_path / "two.npz"))
    np.testing.assert_array_equal(labels2, labels1)
    assert len(labels1) == 50 and sorted(per_image2) == sorted(per_image1)
    for key in per_image1:
        np.testing.assert_array_equal(per_image2[key], per_image1[key], err_msg=str(key))
    # and its adversarial images: the same files, byte for byte, and the same labels.txt
    assert (tmp_path / "adv2" / "labels.txt").read_text() == (tmp_path / "adv1" / "labels.txt").read_text()
    names = sorted(os.listdir(tmp_path / "adv1" / "pgd2"))
    assert len(names) == 50 and sorted(os.listdir(tmp_path / "adv2" / "pgd2")) == names
    assert all((tmp_path / "adv2" / "pgd2" / n).read_bytes() == (tmp_path / "adv1" / "pgd2" / n).read_bytes()
               for n in names)
    # the attack did something, and another --seed draws other targets
    assert one["pgd2"]["top1_error"] > one["clean"]["top1_error"] or one["pgd2"]["attack_success"] > 0
    eval_py(*args, "--batch", "8", "--seed", "1", "--per-image", tmp_path / "seed1.npz")
    _, seed0 = records.load_per_image(str(tmp_path / "one.npz"))
    _, seed1 = records.load_per_image(str(tmp_path / "seed1.npz"))
    assert not np.array_equal(seed0[("attack_success", "clean")], seed1[("attack_success", "clean")]) or \
        not np.array_equal(seed0[("top1_error", "pgd2")], seed1[("top1_error", "pgd2")])


def _write_images(directory):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.RandomState(0)
    cv2.imwrite(os.path.join(directory, "a_color.png"), rng.randint(0, 255, (40, 30, 3), dtype=np.uint8))
    cv2.imwrite(os.path.join(directory, "b_gray.png"), rng.randint(0, 255, (20, 20), dtype=np.uint8))
    bgra = rng.randint(0, 255, (25, 35, 4), dtype=np.uint8)
    cv2.imwrite(os.path.join(directory, "c_alpha.png"), bgra)
    ok, jpg = cv2.imencode(".jpg", rng.randint(0, 255, (30, 30, 3), dtype=np.uint8))
    with open(os.path.join(directory, "d_photo.JPEG"), "wb") as f:
        f.write(jpg.tobytes())
    with open(os.path.join(directory, "e_corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")


def test_black_box_directory_predictions(model_npz, tmp_path):
    _write_images(tmp_path / "imgs")
    out = eval_py("--load", model_npz, "--eval-directory", tmp_path / "imgs", "--prediction-file",
                  tmp_path / "pred.txt", "--logits-file", tmp_path / "logits.npz", "--quiet")
    lines = (tmp_path / "pred.txt").read_text().splitlines()
    names = [x.split(",")[0] for x in lines]
    assert names == ["a_color.png", "b_gray.png", "c_alpha.png", "d_photo.JPEG"]   # corrupt one skipped
    assert all(0 <= int(x.split(",")[1]) < 10 for x in lines)
    assert "e_corrupt.jpg" in out.stdout
    saved = np.load(tmp_path / "logits.npz")
    assert list(saved["filenames"]) == names and saved["logits"].shape == (4, 10)
    assert [int(x.split(",")[1]) for x in lines] == list(saved["logits"].argmax(1))


def test_all_or_nothing_on_a_hand_made_case():
    truth = {"x": 1, "y": 2, "z": 3}
    preds = {"atk1": {"x": 1, "y": 2, "z": 0}, "atk2": {"x": 1, "y": 5, "z": 3}, "atk3": {"x": 1, "y": 2}}
    r = blackbox.all_or_nothing(truth, preds)
    # x is right under every attacker; y fails atk2; z fails atk1 and is missing from atk3
    assert r["all_or_nothing_accuracy"] == pytest.approx(1 / 3)
    assert r["per_attacker_accuracy"] == {"atk1": pytest.approx(2 / 3), "atk2": pytest.approx(2 / 3),
                                          "atk3": pytest.approx(2 / 3)}


def test_all_or_nothing_cli(model_npz, tmp_path):
    for atk in ("atk1", "atk2"):
        _write_images(tmp_path / atk)
    os.remove(tmp_path / "atk2" / "b_gray.png")
    predictor = Predictor(SMALL, checkpoint.read_checkpoint(str(model_npz))[0])
    from data.images import SkippedFiles
    from evaluation.jobs import predict_directory
    names, logits = predict_directory(predictor, str(tmp_path / "atk1"), 8, False, SkippedFiles())
    truth = dict(zip(names, logits.argmax(1)))          # the model is right on every atk1 image
    (tmp_path / "labels.txt").write_text("".join("%s,%d\n" % kv for kv in truth.items()))
    eval_py("--load", model_npz, "--labels", tmp_path / "labels.txt", "--all-or-nothing", tmp_path / "atk1",
            tmp_path / "atk2", "--json-out", tmp_path / "aon.json", "--per-image", tmp_path / "aon.npz", "--quiet")
    res = json.loads((tmp_path / "aon.json").read_text())["all_or_nothing"]
    assert res["num_images"] == 4
    assert res["per_attacker_accuracy"]["atk1"] == 1.0
    assert res["all_or_nothing_accuracy"] == pytest.approx(3 / 4)   # b_gray is missing for atk2
    # every image's outcome, in filename order, so two models can be paired on the same images
    labels, per_image = records.load_per_image(str(tmp_path / "aon.npz"))
    order = sorted(truth)
    np.testing.assert_array_equal(labels, [truth[n] for n in order])
    assert set(per_image) == {("top1_error", n) for n in ("atk1", "atk2", blackbox.ALL_OR_NOTHING)}
    np.testing.assert_array_equal(per_image[("top1_error", "atk2")], [n == "b_gray.png" for n in order])
    np.testing.assert_array_equal(per_image[("top1_error", blackbox.ALL_OR_NOTHING)],
                                  per_image[("top1_error", "atk1")] | per_image[("top1_error", "atk2")])
    assert 1 - per_image[("top1_error", blackbox.ALL_OR_NOTHING)].mean() == res["all_or_nothing_accuracy"]


def test_all_or_nothing_per_image_on_a_hand_made_case():
    truth = {"x": 1, "y": 2, "z": 3}
    preds = {"atk1": {"x": 1, "y": 2, "z": 0}, "atk2": {"x": 1, "y": 5, "z": 3}, "atk3": {"x": 1, "y": 2}}
    names, labels, correct, all_correct = blackbox.all_or_nothing_per_image(truth, preds)
    assert names == ["x", "y", "z"] and list(labels) == [1, 2, 3]
    assert [list(correct[a]) for a in ("atk1", "atk2", "atk3")] == [[True, True, False], [True, False, True],
                                                                   [True, True, False]]
    assert list(all_correct) == [True, False, False]


@pytest.mark.parametrize("epsilon", [16.0, 25.5, 51.0])
def test_saved_adversarial_pixels_keep_the_attacks_strength_inside_the_ball(epsilon):
    """PGD leaves most pixels on the ball's surface; in float32 model space +-epsilon comes
    back as e.g. 15.99999, which truncation saved as 15. Saved perturbations are rounded,
    then clipped to +-floor(epsilon), and the image to 0..255."""
    rng = np.random.RandomState(0)
    clean = rng.randint(60, 196, size=(4, 28, 28, 1)).astype(np.uint8)
    sign = rng.choice([-1.0, 1.0], size=clean.shape)
    to_model = lambda pix: (np.asarray(pix, np.float64) * (2.0 / 255) - 1.0).astype(np.float32)
    surface = records.quantize_adversarial(clean, to_model(clean + sign * epsilon), epsilon)
    np.testing.assert_array_equal(surface.astype(int) - clean, sign * np.floor(epsilon))
    inside = records.quantize_adversarial(clean, to_model(clean + np.where(sign > 0, 3.4, -3.6)), epsilon)
    np.testing.assert_array_equal(inside.astype(int) - clean, np.where(sign > 0, 3, -4))
    edges = np.array([[0, 255]], np.uint8).reshape(1, 1, 2, 1)
    out = records.quantize_adversarial(edges, to_model(edges + np.array([-9.0, 9.0]).reshape(1, 1, 2, 1)), 16)
    np.testing.assert_array_equal(out.ravel(), [0, 255])


def test_save_adversarial_cli_writes_the_attacks_not_the_clean_images(model_npz, tmp_path):
    """eval.py --save-adversarial: one directory per attack (the clean evaluation is no
    attacker), labels.txt with the true labels, every image within floor(epsilon) of the
    clean test image."""
    from data.fashion_mnist import load_fashion_mnist
    out_dir = tmp_path / "adv"
    eval_py("--load", model_npz, "--data", FMNIST, "--attack-iter", "0,3", "--limit", "20", "--batch", "8",
            "--attack-epsilon", "25.5", "--save-adversarial", out_dir, "--quiet")
    assert sorted(os.listdir(out_dir)) == ["labels.txt", "pgd3"]
    images, labels = load_fashion_mnist(FMNIST, "test")
    lines = (out_dir / "labels.txt").read_text().split()
    assert lines == ["%06d.png,%d" % (i, labels[i]) for i in range(20)]
    deltas = []
    for i in range(20):
        saved = cv2.imread(str(out_dir / "pgd3" / ("%06d.png" % i)), cv2.IMREAD_UNCHANGED)
        deltas.append(saved.astype(int) - images[i].reshape(saved.shape).astype(int))
    deltas = np.abs(np.stack(deltas))
    assert deltas.max() == 25 and (deltas == 25).mean() > 0.2


def test_all_or_nothing_over_npz_sets_takes_their_labels(model_npz, tmp_path):
    """Sets saved as .npz (one file per crafting run, arrays images/<attack>) carry their
    labels: several files made on the same images need no --labels, and each array counts as
    one attacker; files made on other images are refused with one line."""
    common = ("--load", model_npz, "--data", FMNIST, "--batch", "8", "--attack-epsilon", "25.5", "--quiet")
    eval_py(*common, "--limit", "12", "--attack-iter", "1,2", "--save-adversarial", tmp_path / "a.npz")
    eval_py(*common, "--limit", "12", "--attack", "fgsm", "--untargeted", "--attack-iter", "1", "--save-adversarial",
            tmp_path / "b.npz")
    eval_py(*common, "--all-or-nothing", tmp_path / "a.npz", tmp_path / "b.npz", "--json-out", tmp_path / "r.json")
    res = json.loads((tmp_path / "r.json").read_text())["all_or_nothing"]
    assert set(res["per_attacker_accuracy"]) == {"a.npz/pgd1", "a.npz/pgd2", "b.npz/fgsm1"}
    assert res["num_images"] == 12
    assert res["all_or_nothing_accuracy"] <= min(res["per_attacker_accuracy"].values())
    eval_py(*common, "--limit", "10", "--attack-iter", "1", "--save-adversarial", tmp_path / "c.npz")
    proc = eval_py(*common, "--all-or-nothing", tmp_path / "a.npz", tmp_path / "c.npz", check=False)
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode != 0 and "hold different images or labels" in last and "--labels" in last, last


def test_per_image_results_add_up_and_match_the_clean_predictions(model_npz, tmp_path):
    """eval.py --per-image: every image's metrics in test-set order; their means are the
    JSON's rates, and the clean top-1 errors are those of an independent Predictor run on the
    same images (so the order and the labels are right, not just the sums)."""
    from data.fashion_mnist import load_fashion_mnist
    eval_py("--load", model_npz, "--data", FMNIST, "--attack-iter", "0,3", "--limit", "37", "--batch", "16",
            "--attack-epsilon", "25.5", "--seed", "0", "--json-out", tmp_path / "r.json",
            "--per-image", tmp_path / "p.npz", "--quiet")
    doc = json.loads((tmp_path / "r.json").read_text())["white_box"]
    labels, per_image = records.load_per_image(str(tmp_path / "p.npz"))
    images, true_labels = load_fashion_mnist(FMNIST, "test")
    np.testing.assert_array_equal(labels, true_labels[:37])
    assert set(per_image) == {(m, n) for m in ("top1_error", "top5_error", "attack_success", "non_finite_logits")
                              for n in ("clean", "pgd3")}
    for (metric, name), values in per_image.items():
        assert values.shape == (37,) and set(np.unique(values)) <= {0, 1}
        assert values.mean() == pytest.approx(doc[name][metric], abs=1e-6), (metric, name)
    params, _ = checkpoint.read_checkpoint(str(model_npz))
    predicted = Predictor(SMALL, params)(images[:37].reshape(37, 28, 28, 1)).argmax(1)
    np.testing.assert_array_equal(per_image[("top1_error", "clean")], predicted != true_labels[:37])


def test_per_image_is_refused_where_it_cannot_apply(model_npz, tmp_path):
    r = eval_py("--load", model_npz, "--eval-directory", tmp_path, "--per-image", tmp_path / "p.npz", check=False)
    assert r.returncode == 2 and "--per-image is for white-box or --all-or-nothing evaluation" in r.stdout, r.stdout
    assert not (tmp_path / "p.npz").exists()


EXPORTED_GRADIENT = """
import sys, numpy as np, tensorflow as tf
tfv1 = tf.compat.v1
pb, saved, images = sys.argv[1:4]
x = np.load(images)
out = []
with tf.Graph().as_default() as g:
    gd = tfv1.GraphDef()
    gd.ParseFromString(open(pb, "rb").read())
    tf.import_graph_def(gd, name="")
    grad = tf.gradients(g.get_tensor_by_name("logits:0")[:, 3], g.get_tensor_by_name("input:0"))[0]
    with tfv1.Session() as sess:
        out.append(sess.run(grad, {"input:0": x}))
with tf.Graph().as_default(), tfv1.Session() as sess:
    sig = tfv1.saved_model.loader.load(sess, ["serve"], saved).signature_def["serving_default"]
    g = sess.graph
    grad = tf.gradients(g.get_tensor_by_name(sig.outputs["logits"].name)[:, 3],
                        g.get_tensor_by_name(sig.inputs["image"].name))[0]
    out.append(sess.run(grad, {sig.inputs["image"].name: x}))
np.save(images + ".grads.npy", np.stack(out))
"""


def test_exported_graphs_can_be_differentiated_anywhere(tmp_path):
    """A white-box attacker of a submitted model takes gradients of the exported graph in a
    process of its own, without this project's code. The project's own gradients (frozen
    BN, the median's) are registered only where ``nets`` is imported, so the export must not
    name them: the gradient there must be the one our graphs compute."""
    spec = ArchSpec("small", 14, num_classes=10, image_size=28, image_channels=1, width=4,
                    denoise=DenoiseSpec("median"))
    params = make_checkpoint(tmp_path / "m.npz", spec, seed=2)
    eval_py("--load", tmp_path / "m.npz", "--export-frozen", tmp_path / "m.pb", "--export-savedmodel",
            tmp_path / "sm", "--export-input-dtype", "float32")
    x = (np.random.RandomState(3).rand(4, 28, 28, 1) * 255).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "grad.py"
    script.write_text(EXPORTED_GRADIENT)
    run([PYTHON, script, tmp_path / "m.pb", tmp_path / "sm", tmp_path / "x.npy"], cwd=tmp_path)
    exported = np.load(str(tmp_path / "x.npy.grads.npy"))
    from attacks import to_model_space
    from model import AdvModel
    g = tf.Graph()
    with g.as_default():
        image = tfv1.placeholder(tf.float32, [None, 28, 28, 1])
        with TowerContext("", is_training=False):
            logits = AdvModel(spec).logits(to_model_space(image), training=False)
        grad = tf.gradients(logits[:, 3], image)[0]
        assert any(op.type == "IdentityN" for op in g.get_operations())    # ours: the median's gradient
    sess = session.build_session(g, params, "m.npz")
    ours = sess.run(grad, {image: x})
    assert np.abs(ours).max() > 0
    for theirs in exported:
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-6 * np.abs(ours).max())


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_exports_reproduce_the_logits(model_npz, tmp_path, dtype):
    eval_py("--load", model_npz, "--export-frozen", tmp_path / "m.pb", "--export-savedmodel", tmp_path / "sm",
            "--export-input-dtype", dtype)
    params, _ = checkpoint.read_checkpoint(str(model_npz))
    images = np.random.RandomState(1).randint(0, 256, (5, 28, 28, 1)).astype(dtype)
    expected = Predictor(SMALL, params)(images.astype("uint8"))
    g = tf.Graph()
    with g.as_default():
        gd = tfv1.GraphDef()
        gd.ParseFromString((tmp_path / "m.pb").read_bytes())
        tf.import_graph_def(gd, name="")
        with tfv1.Session() as sess:
            frozen = sess.run("logits:0", {"input:0": images})
    np.testing.assert_allclose(frozen, expected, rtol=1e-4, atol=1e-4)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        meta = tfv1.saved_model.loader.load(sess, ["serve"], str(tmp_path / "sm"))
        sig = meta.signature_def["serving_default"]
        saved = sess.run(sig.outputs["logits"].name, {sig.inputs["image"].name: images})
    np.testing.assert_allclose(saved, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, family, depth, op, at", [
    ("ResNet-50", "resnet", 50, None, "groups"),
    ("ResNet-101", "resnet", 101, None, "groups"),
    ("ResNet-152", "resnet", 152, None, "groups"),
    ("ResNetDenoise-50", "resnet", 50, "nonlocal", "groups"),
    ("ResNetDenoise-152", "resnet", 152, "nonlocal", "groups"),
    ("ResNeXtDenoiseAll-50", "resnext", 50, "nonlocal-dot", "all"),
    ("ResNeXtDenoiseAll-101", "resnext", 101, "nonlocal-dot", "all"),
])
def test_architecture_inferred_from_the_released_variable_lists(name, family, depth, op, at):
    path = REPO / "tests" / "data" / "checkpoint-variables" / ("%s.json" % name)
    shapes = json.loads(path.read_text())
    spec, notes = infer_arch(shapes)
    assert (spec.family, spec.depth, spec.denoise.op) == (family, depth, op)
    if op:
        assert spec.denoise.at == at and notes       # the guess is said out loud
    assert spec.num_classes == 1000 and spec.image_size == 224


def test_recorded_architecture_wins_over_guessing(tmp_path):
    spec = ArchSpec("small", 14, num_classes=10, image_size=28, image_channels=1, width=4,
                    denoise=DenoiseSpec("median"))
    make_checkpoint(tmp_path / "m.npz", spec)
    params, recorded = checkpoint.read_checkpoint(str(tmp_path / "m.npz"))
    assert infer_arch({k: v.shape for k, v in params.items()}, recorded)[0].denoise.op == "median"
    # without the record the same variables read as the dot-product op, and say so
    guessed, notes = infer_arch({k: v.shape for k, v in params.items()})
    assert guessed.denoise.op == "nonlocal-dot" and notes


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(checkpoint.CheckpointError, match="pickled"):
        checkpoint.read_checkpoint(str(path))


def _imagenet_val(root, flat):
    """4 classes x 2 JPEGs; class directories (train/ and val/), or a flat val/ + val.txt."""
    rng = np.random.RandomState(0)
    wnids = ["n0000000%d" % i for i in range(4)]
    for w in wnids:
        os.makedirs(os.path.join(root, "train", w), exist_ok=True)
        cv2.imwrite(os.path.join(root, "train", w, "t.JPEG"), rng.randint(0, 255, (40, 50, 3), dtype=np.uint8))
    lines = []
    for i, w in enumerate(wnids):
        for j in range(2):
            img = rng.randint(0, 255, (48 + 8 * j, 64, 3), dtype=np.uint8)
            if flat:
                name = "ILSVRC2012_val_%08d.JPEG" % (2 * i + j)
                os.makedirs(os.path.join(root, "val"), exist_ok=True)
                cv2.imwrite(os.path.join(root, "val", name), img)
                lines.append("%s %d\n" % (name, i))
            else:
                os.makedirs(os.path.join(root, "val", w), exist_ok=True)
                cv2.imwrite(os.path.join(root, "val", w, "%d.JPEG" % j), img)
    if flat:
        with open(os.path.join(root, "val.txt"), "w") as f:
            f.writelines(lines)


@pytest.fixture(scope="module")
def r50_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("r50") / "R50.npz"
    make_checkpoint(path, ArchSpec("resnet", 50), record_arch=False)   # like a released file
    return path


@pytest.mark.parametrize("flat", [False, True])
def test_imagenet_directories_in_both_layouts(r50_npz, tmp_path, flat):
    _imagenet_val(str(tmp_path / "imagenet"), flat)
    out = eval_py("--load", r50_npz, "--data", tmp_path / "imagenet", "--attack-iter", "0", "--batch", "4",
                  "--json-out", tmp_path / "r.json", "--quiet")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["arch"]["family"] == "resnet" and doc["arch"]["depth"] == 50    # inferred, no flags
    assert doc["white_box"]["clean"]["num_images"] == 8, out.stdout[-2000:]
