"""The recipe (schedule, weight decay), resume, and distributed training."""
import json
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

from model import AdvModel
from training.schedule import LRSchedule
from helpers import PYTHON, REPO, horovodrun, run
from nets import ArchSpec

tfv1 = tf.compat.v1


@pytest.mark.parametrize("workers, expected", [
    # 1 worker x 32 = 32 images: 0.1 * 32/256 = 0.0125, no warm-up (it does not exceed 0.1)
    (1, {0: 0.0125, 34.9: 0.0125, 35: 0.00125, 70: 0.000125, 95: 0.0000125, 109.9: 0.0000125}),
    # 8 x 32 = 256: exactly 0.1
    (8, {0: 0.1, 4: 0.1, 35: 0.01, 69: 0.01, 70: 0.001, 95: 0.0001}),
    # 128 x 32 = 4096 (Sec. 5): 1.6 after a linear warm-up from 0.1 over 5 epochs
    (128, {0: 0.1, 1: 0.4, 2.5: 0.85, 5: 1.6, 34.99: 1.6, 35: 0.16, 70: 0.016, 95: 0.0016, 109: 0.0016}),
])
def test_learning_rate_schedule(workers, expected):
    schedule = LRSchedule(total_batch=32 * workers)
    for epoch, lr in expected.items():
        assert schedule(epoch) == pytest.approx(lr, rel=1e-9), epoch


def test_weight_decay_applies_to_conv_and_fc_weights_only():
    spec = ArchSpec("small", 14, num_classes=10, image_size=12, image_channels=1, width=4)
    g = tf.Graph()
    with g.as_default():
        model = AdvModel(spec, weight_decay=1e-4)
        image = tfv1.placeholder(tf.uint8, [None, 12, 12, 1])
        label = tfv1.placeholder(tf.int32, [None])
        with TowerContext("", is_training=True):
            model.build_graph(image, label)
        wd = g.get_tensor_by_name("wd_cost:0")
        variables = tfv1.trainable_variables()
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            rng = np.random.RandomState(0)
            for v in variables:   # make every variable non-zero so that a wrong set shows
                v.load(rng.uniform(0.5, 1.5, v.shape.as_list()).astype("float32"), sess)
            values = dict(zip([v.op.name for v in variables], sess.run(variables)))
            got = sess.run(wd)
    weights = [k for k in values if k.endswith("/W")]
    others = [k for k in values if not k.endswith("/W")]
    assert "linear/W" in weights and "linear/b" in others and any(k.endswith("gamma") for k in others)
    expected = 1e-4 * sum(0.5 * np.sum(values[k].astype(np.float64) ** 2) for k in weights)
    assert got == pytest.approx(expected, rel=1e-5)


TINY = ["--arch", "S14", "--width", "4", "--attack-iter", "1", "--batch", "8", "--steps-per-epoch", "3",
        "--eval-attack-iters", "0", "--eval-long-attack-iter", "0", "--eval-batch", "16", "--seed", "1"]


def _train(logdir, *extra, fake=True):
    args = [PYTHON, REPO / "train.py"] + (["--fake"] if fake else []) + TINY + ["--logdir", logdir] + list(extra)
    return run(args, timeout=600)


def _checkpoint_step(logdir):
    prefix = tf.train.latest_checkpoint(str(logdir))
    return int(tf.train.load_checkpoint(prefix).get_tensor("global_step")), prefix


def test_stop_after_an_epoch_and_resume(tmp_path):
    logdir = tmp_path / "run"
    _train(logdir, "--epochs", "1")
    step, prefix1 = _checkpoint_step(logdir)
    assert step == 3
    lines = [json.loads(x) for x in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch_num"] for x in lines] == [1]
    # resume: the same command with a longer schedule continues at epoch 2
    out = _train(logdir, "--epochs", "2").stdout
    assert re.search(r"Resuming from .*model-3 at epoch 2", out), out[-3000:]
    assert _checkpoint_step(logdir)[0] == 6
    lines = [json.loads(x) for x in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch_num"] for x in lines] == [1, 2]
    # and with the learning rate of the schedule at that point (fake data: 1024 images, 8 per
    # step: peak 0.1 * 8/256, decays at 35/70/95 do not apply)
    assert lines[1]["learning_rate"] == pytest.approx(0.1 * 8 / 256)
    # a finished run started again trains nothing and its weights are the checkpoint's
    _train(logdir, "--epochs", "2")
    assert _checkpoint_step(logdir)[0] == 6
    final = dict(np.load(logdir / "model-final.npz"))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(logdir)))
    for name in ("conv0/W", "linear/W", "group3/block0/conv3/bn/gamma", "group0/block0/conv1/bn/mean/EMA"):
        np.testing.assert_array_equal(final[name], reader.get_tensor(name))
    # eval.py takes the tensorpack checkpoint directory itself (architecture from arch.json)
    # and gives the same clean figures as the exported .npz
    figures = []
    for load in (logdir, logdir / "model-final.npz"):
        out = tmp_path / ("e%d.json" % len(figures))
        run([PYTHON, REPO / "eval.py", "--load", load, "--fake", "--attack-iter", "0", "--limit", "32",
             "--batch", "16", "--seed", "0", "--json-out", out, "--quiet"])
        figures.append(json.loads(out.read_text())["white_box"]["clean"])
    assert figures[0]["num_images"] == 32 and figures[0] == figures[1]
    # BN moving statistics were updated by training (inference depends on them)
    assert not np.allclose(final["conv0/bn/variance/EMA"], 1.0)
    assert not np.allclose(final["group2/block0/conv2/bn/mean/EMA"], 0.0)


def test_load_refuses_a_checkpoint_of_another_architecture(tmp_path):
    logdir = tmp_path / "a"
    _train(logdir, "--epochs", "1")
    proc = run([PYTHON, REPO / "train.py", "--fake"] + TINY + ["--denoise", "nonlocal", "--epochs", "1",
                                                               "--logdir", tmp_path / "b",
                                                               "--load", logdir / "model-final.npz"],
               check=False, timeout=300)
    assert proc.returncode == 2
    assert "missing" in proc.stdout and "group0_denoise/embedding_theta/W" in proc.stdout


@pytest.mark.horovod
def test_two_rank_training_and_distributed_evaluation(tmp_path):
    fmnist = "/usr/share/datasets/fashion-mnist"
    logdir = tmp_path / "hvd"
    horovodrun(2, [REPO / "train.py", "--data", fmnist] + TINY +
               ["--epochs", "1", "--eval-limit", "40", "--eval-attack-iters", "0,1", "--logdir", logdir,
                "--loader-workers", "1"], timeout=600)
    lines = [json.loads(x) for x in (logdir / "metrics.jsonl").read_text().splitlines()]
    clean_rank_sum = lines[-1]
    assert clean_rank_sum["clean/num_images"] == 40   # two shards of 20, summed
    # the two ranks hold the same weights bit for bit after the epoch (training.callbacks.RankWeightsCheck,
    # which tests/test_environment.py shows detecting a one-element difference)
    assert clean_rank_sum["ranks/variables_differing"] == 0 and clean_rank_sum["ranks/weight_spread"] == 0
    # the same 40 images in one process, with the weights the two ranks trained
    out = run([PYTHON, REPO / "eval.py", "--load", logdir / "model-final.npz", "--data", fmnist,
               "--attack-iter", "0,1", "--limit", "40", "--json-out", tmp_path / "e.json", "--quiet"])
    single = json.loads((tmp_path / "e.json").read_text())["white_box"]
    assert single["clean"]["num_images"] == 40, out.stdout
    # Clean, and attacked too: training's evaluations draw each image's target and start from
    # seed 0 (eval.py's default), so two ranks' in-training PGD-1 is eval.py's, digit for digit.
    for name in ("clean", "pgd1"):
        for m in ("top1_error", "top5_error", "attack_success"):
            assert single[name][m] == pytest.approx(clean_rank_sum["%s/%s" % (name, m)], abs=1e-9), (name, m)
    # training itself draws afresh every step (stateful): only the evaluations are per image
    info = json.loads((logdir / "run.json").read_text())
    assert "per-image" not in info["train_attack"] and info["train_attack"].startswith("pgd(")
    assert info["eval_attacks"]["pgd1"].endswith("per-image seed=0)"), info["eval_attacks"]


def test_a_diverging_run_stops_with_the_step_and_the_last_checkpoint(tmp_path):
    """Table 1: without the residual connection training diverges; here an absurd learning
    rate does the same. The run must stop at once with a clear message and exit code 3,
    keeping the checkpoint of the last finished epoch."""
    logdir = tmp_path / "nan"
    _train(logdir, "--epochs", "1")                        # one good epoch, checkpoint model-3
    final = (logdir / "model-final.npz").read_bytes()
    proc = run([PYTHON, REPO / "train.py", "--fake"] + TINY +
               ["--logdir", logdir, "--epochs", "4", "--base-lr", "1e30"],
               check=False, timeout=300)
    assert proc.returncode == 3, proc.stdout[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("train.py: error:")]
    assert len(line) == 1 and ("became nan" in line[0] or "became inf" in line[0]), proc.stdout[-3000:]
    assert "model-3" in line[0]
    assert _checkpoint_step(logdir)[0] == 3
    # the diverged weights are not exported over the finished run's final model
    assert (logdir / "model-final.npz").read_bytes() == final
    assert "Logging error" not in proc.stdout and "Traceback" not in proc.stdout


def test_imagenet_training_path_end_to_end(tmp_path):
    """train.py on a generated ImageNet directory with a real ResNet-50 graph: JPEG decoding
    and augmentation, PGD in the training tower, evaluation on val/, export."""
    from test_eval import _imagenet_val
    _imagenet_val(str(tmp_path / "imagenet"), flat=False)
    logdir = tmp_path / "r50"
    out = run([PYTHON, REPO / "train.py", "--data", tmp_path / "imagenet", "--arch", "R50", "--batch", "2",
               "--attack-iter", "1", "--steps-per-epoch", "2", "--epochs", "1", "--eval-attack-iters", "0",
               "--eval-long-attack-iter", "0", "--eval-batch", "4", "--loader-workers", "1", "--logdir", logdir],
              timeout=600).stdout
    assert "Architecture R50" in out and "GFLOPs" in out
    record = json.loads((logdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["clean/num_images"] == 8                   # every val image once
    final = np.load(logdir / "model-final.npz")
    assert final["linear/W"].shape == (2048, 4)              # classes from the directory
    assert final["conv0/W"].shape == (7, 7, 3, 64)
