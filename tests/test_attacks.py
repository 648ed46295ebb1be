"""The attackers' invariants, on models where the right answer is known."""
import numpy as np
import pytest
import tensorflow as tf
from tensorpack.tfutils.tower import TowerContext

import attacks
from attack_builders import FGSMAttacker, IFGSMAttacker, MIFGSMAttacker, PGDAttacker, RestartAttacker
from attacks import PIXEL_SCALE, Draws, LinfBall, make_attacker, per_image_metrics
from model import AdvModel
from nets import ArchSpec, DenoiseSpec

tfv1 = tf.compat.v1
K = 10


def linear_model(x):
    """logits_k = 10 * x_k: class k wins when pixel k is the largest; the target of any
    targeted attack is reachable once epsilon lets pixel t exceed the others."""
    return 10.0 * tf.reshape(x, [-1, K])


def random_dense_model(seed=0):
    w = np.random.RandomState(seed).randn(K, K).astype("float32")
    return lambda x: tf.matmul(tf.reshape(x, [-1, K]), w)


def run_attack(attacker, clean, labels, model_fn=linear_model, seed=None, runs=1):
    g = tf.Graph()
    with g.as_default():
        if seed is not None:
            tfv1.set_random_seed(seed)
        x = tf.constant(clean)
        y = tf.constant(labels)
        adv, target = attacker.attack(x, y, model_fn, K)
        logits = model_fn(adv)
        with tfv1.Session() as sess:
            outs = [sess.run([adv, target, logits]) for _ in range(runs)]
    return outs if runs > 1 else outs[0]


def random_images(n=64, seed=0):
    rng = np.random.RandomState(seed)
    return rng.uniform(-1, 1, size=(n, 2, 5, 1)).astype("float32"), rng.randint(0, K, n).astype("int32")


ALL_ATTACKERS = [
    lambda: PGDAttacker(16, 1, 10),
    lambda: PGDAttacker(16, 1, 10, targeted=False),
    lambda: PGDAttacker(16, 1, 10, loss="cw"),
    lambda: PGDAttacker(16, 1, 10, targeted=False, loss="cw"),
    lambda: PGDAttacker(40, 4, 5, prob_start_from_clean=0.5),
    lambda: FGSMAttacker(16),
    lambda: FGSMAttacker(16, targeted=False),
    lambda: IFGSMAttacker(16, 2, 8),
    lambda: MIFGSMAttacker(16, 2, 8),
    lambda: MIFGSMAttacker(16, 2, 8, targeted=False),
    lambda: RestartAttacker(PGDAttacker(16, 2, 4), 3),
    # evaluation's stateless per-image draws
    lambda: PGDAttacker(16, 1, 10, per_image_seed=0),
    lambda: PGDAttacker(40, 4, 5, prob_start_from_clean=0.5, per_image_seed=1),
    lambda: RestartAttacker(PGDAttacker(16, 2, 4, per_image_seed=2), 3),
]


@pytest.mark.parametrize("make", ALL_ATTACKERS)
def test_adversarial_images_stay_in_the_ball_and_the_valid_range(make):
    clean, labels = random_images()
    # pixels near the range limits, so the valid-range clip matters
    clean[:8] = np.sign(clean[:8]) * 0.99
    adv, _, _ = run_attack(make(), clean, labels, random_dense_model())
    eps = make().epsilon * PIXEL_SCALE
    assert np.all(np.abs(adv - clean) <= eps + 1e-6)
    assert adv.min() >= -1.0 - 1e-6 and adv.max() <= 1.0 + 1e-6
    assert np.abs(adv - clean).max() > 0.5 * eps   # the attack did move


@pytest.mark.parametrize("loss", ["xent", "cw"])
def test_targeted_pgd_reaches_a_reachable_target(loss):
    clean = np.zeros((40, 2, 5, 1), np.float32)          # every pixel 127.5: all classes tie
    labels = np.arange(40, dtype=np.int32) % K
    # epsilon 64 (0.5 in model space) lets x_t = +0.5 and all others -0.5: t is provably reachable
    adv, target, logits = run_attack(PGDAttacker(64, 8, 20, loss=loss), clean, labels)
    assert np.all(target != labels)
    assert np.all(logits.argmax(1) == target)


def test_untargeted_pgd_leaves_the_true_class():
    clean, labels = random_images()
    clean = np.zeros_like(clean)
    clean.reshape(-1, K)[np.arange(len(labels)), labels] = 0.2   # true class wins by a little
    assert np.all(linear_np(clean).argmax(1) == labels)
    _, _, logits = run_attack(PGDAttacker(64, 8, 20, targeted=False), clean, labels)
    assert np.all(logits.argmax(1) != labels)


def linear_np(x):
    return 10.0 * x.reshape(-1, K)


@pytest.mark.parametrize("make", ALL_ATTACKERS[:1] + ALL_ATTACKERS[5:6] + ALL_ATTACKERS[8:9])
def test_epsilon_zero_leaves_the_image_unchanged(make):
    clean, labels = random_images()
    a = make()
    a.threat = LinfBall(0.0)
    adv, _, _ = run_attack(a, clean, labels)
    np.testing.assert_array_equal(adv, clean)


def test_step_size_rule():
    # Sec. 6.1: step 1, except 1.6 for 10 iterations at epsilon 16
    assert PGDAttacker(16, 1, 10).step / PIXEL_SCALE == pytest.approx(1.6)
    assert PGDAttacker(16, 1, 100).step / PIXEL_SCALE == pytest.approx(1.0)
    assert PGDAttacker(16, 1, 30).step / PIXEL_SCALE == pytest.approx(1.0)
    assert FGSMAttacker(16).step / PIXEL_SCALE == pytest.approx(16)


def test_a_single_pgd_step_has_the_size_of_the_rule():
    """Checks the step the loop really takes: start from clean (prob 1), one iteration."""
    clean = np.zeros((5, 2, 5, 1), np.float32)
    labels = np.zeros(5, np.int32)
    adv, _, _ = run_attack(PGDAttacker(16, 3, 1, prob_start_from_clean=1.0), clean, labels)
    # step = max(3, 16/1) = 16 pixels; every pixel moves by exactly that (sign step, inside the ball)
    np.testing.assert_allclose(np.abs(adv - clean), 16 * PIXEL_SCALE, rtol=1e-5)


def test_target_distribution_is_uniform_over_the_other_classes():
    g = tf.Graph()
    with g.as_default():
        label = tf.constant(np.repeat(np.arange(K, dtype=np.int32), 400))
        target = Draws().targets(label, K)
        with tfv1.Session() as sess:
            t = sess.run(target)
    labels = np.repeat(np.arange(K), 400)
    assert np.all(t != labels)
    counts = np.zeros((K, K))
    np.add.at(counts, (labels, t), 1)
    expected = 400 / (K - 1)
    off_diag = counts[~np.eye(K, dtype=bool)]
    assert off_diag.min() > 0                      # every other class is reachable
    chi2 = ((off_diag - expected) ** 2 / expected).sum()
    assert chi2 < 150, chi2                         # dof = 90; p(chi2 > 150) ~ 1e-4


def test_start_from_clean_split():
    """Sec. 5: 20% of batches start PGD at the clean image, 80% at a random point."""
    attacker = PGDAttacker(16, 1, 30, prob_start_from_clean=0.2)
    g = tf.Graph()
    with g.as_default():
        x = tf.zeros([4, 2, 5, 1])
        start = attacker.random_start(x)
        from_clean = tf.reduce_all(tf.equal(start, x))
        with tfv1.Session() as sess:
            draws = np.array([sess.run(from_clean) for _ in range(2000)])
    rate = draws.mean()
    assert abs(rate - 0.2) < 0.04, rate   # 4.5 sigma of a binomial(2000, 0.2)
    # the random starts fill the ball
    with g.as_default(), tfv1.Session() as sess:
        s = np.concatenate([sess.run(start).ravel() for _ in range(50)])
    s = s[s != 0]
    assert s.min() < -0.9 * attacker.eps and s.max() > 0.9 * attacker.eps


def test_fixed_seed_gives_the_same_adversarial_images():
    clean, labels = random_images()
    a1, t1, _ = run_attack(PGDAttacker(16, 1, 5, seed=7), clean, labels, random_dense_model(), seed=3)
    a2, t2, _ = run_attack(PGDAttacker(16, 1, 5, seed=7), clean, labels, random_dense_model(), seed=3)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(t1, t2)
    a3, _, _ = run_attack(PGDAttacker(16, 1, 5, seed=8), clean, labels, random_dense_model(), seed=3)
    assert not np.array_equal(a1, a3)


def _attack_in_batches(attacker, clean, labels, splits, model_fn, seed=3):
    """The adversarial images and targets of ``clean`` attacked in separate runs, one per
    batch of ``splits`` (index arrays), put back in the images' order."""
    adv, target = np.zeros_like(clean), np.zeros_like(labels)
    for idx in splits:
        a, t, _ = run_attack(attacker, clean[idx], labels[idx], model_fn, seed=seed)
        adv[idx], target[idx] = a, t
    return adv, target


def test_per_image_draws_do_not_depend_on_batch_or_order():
    """Evaluation: an image's target and random start are functions of the seed and the
    image alone, so the same image gets the same attack in any batch, order or rank."""
    clean, labels = random_images(n=12, seed=4)
    model = random_dense_model(2)
    whole = [np.arange(12)]
    pieces = [np.array([11, 3, 7, 0, 5]), np.array([9, 1]), np.array([10, 2, 8, 6, 4])]
    make = lambda: PGDAttacker(16, 1, 5, per_image_seed=3)      # noqa: E731
    assert "per-image seed=3" in make().describe()              # recorded in eval.py's JSON
    with pytest.raises(attacks.AttackError, match="smaller --seed"):
        PGDAttacker(16, 1, 5, per_image_seed=2 ** 31)
    a1, t1 = _attack_in_batches(make(), clean, labels, whole, model)
    a2, t2 = _attack_in_batches(make(), clean, labels, pieces, model, seed=99)   # graph seed: unused
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    # the stateful draws of training depend on the batch: the property above is not free
    s1, u1 = _attack_in_batches(PGDAttacker(16, 1, 5, seed=3), clean, labels, whole, model)
    s2, u2 = _attack_in_batches(PGDAttacker(16, 1, 5, seed=3), clean, labels, pieces, model)
    assert not np.array_equal(u1, u2) or not np.allclose(s1, s2)
    # another seed, other draws; an image repeated in a batch gets the same draws twice
    a3, t3 = _attack_in_batches(PGDAttacker(16, 1, 5, per_image_seed=4), clean, labels, whole, model)
    assert not np.array_equal(t1, t3) and not np.allclose(a1, a3)
    twice, _ = _attack_in_batches(make(), np.concatenate([clean[:1]] * 2), labels[[0, 0]], [np.arange(2)], model)
    np.testing.assert_array_equal(twice[0], twice[1])


def test_per_image_keys_are_the_pixels_not_the_float_bits():
    """The same uint8 image gives the same key when its float form differs in the last bits
    (another device's arithmetic, or -0.0), and another image gives another key."""
    from attacks.draws import image_keys
    pixels = np.random.RandomState(7).randint(0, 256, size=(16, 4, 4, 3)).astype(np.float32)
    x = pixels * PIXEL_SCALE - 1.0
    nudged = np.nextafter(x, np.float32(2.0))
    signed = np.where(x == 0, np.float32(-0.0), x)
    other = x.copy()
    other[:, 0, 0, 0] = np.where(pixels[:, 0, 0, 0] < 255, pixels[:, 0, 0, 0] + 1, 254) * PIXEL_SCALE - 1.0
    g = tf.Graph()
    with g.as_default(), tfv1.Session() as sess:
        k, kn, ks, ko = sess.run([image_keys(tf.constant(a)) for a in (x, nudged, signed, other)])
    np.testing.assert_array_equal(kn, k)
    np.testing.assert_array_equal(ks, k)
    assert len(set(k.tolist())) == 16 and not np.any(ko == k)


def test_per_image_targets_are_uniform_over_the_other_classes():
    n = 400 * K
    clean, _ = random_images(n=n, seed=5)
    labels = np.repeat(np.arange(K, dtype=np.int32), 400)
    g = tf.Graph()
    with g.as_default(), tfv1.Session() as sess:
        t = sess.run(PGDAttacker(16, 1, 5, per_image_seed=0).targets(tf.constant(clean), tf.constant(labels), K))
    assert np.all(t != labels)
    counts = np.zeros((K, K))
    np.add.at(counts, (labels, t), 1)
    off_diag = counts[~np.eye(K, dtype=bool)]
    expected = 400 / (K - 1)
    assert off_diag.min() > 0
    chi2 = ((off_diag - expected) ** 2 / expected).sum()
    assert chi2 < 150, chi2                         # dof = 90; p(chi2 > 150) ~ 1e-4


def test_per_image_starts_fill_the_ball_and_differ_per_restart():
    attacker = PGDAttacker(16, 1, 30, prob_start_from_clean=0.2, per_image_seed=0)
    clean, _ = random_images(n=2000, seed=6)
    clean = np.clip(clean, -0.5, 0.5)               # no clipping at the range's edges
    g = tf.Graph()
    with g.as_default(), tfv1.Session() as sess:
        x = tf.constant(clean)
        first, second = sess.run([attacker.random_start(x, 0), attacker.random_start(x, tf.constant(1))])
        again = sess.run(attacker.random_start(x, 0))
    np.testing.assert_array_equal(first, again)
    delta, delta2 = first - clean, second - clean
    from_clean = np.all(delta == 0, axis=(1, 2, 3))
    assert abs(from_clean.mean() - 0.2) < 0.04, from_clean.mean()      # per image, Sec. 5's 20%
    moved = delta[~from_clean].ravel()
    assert np.abs(moved).max() <= attacker.eps + 1e-6
    assert moved.min() < -0.95 * attacker.eps and moved.max() > 0.95 * attacker.eps
    assert abs(moved.mean()) < 0.02 * attacker.eps                      # centred
    both = ~from_clean & ~np.all(delta2 == 0, axis=(1, 2, 3))
    assert both.sum() > 1000 and not np.any(np.all(delta[both] == delta2[both], axis=(1, 2, 3)))


def test_restarts_keep_the_most_successful_start():
    """With 1-iteration PGD a single random start often fails; keeping the best of many
    starts can only raise the success rate on the same images."""
    clean, labels = random_images(n=200, seed=1)
    model = random_dense_model(3)
    single = [run_attack(PGDAttacker(48, 2, 1, seed=s), clean, labels, model, seed=s) for s in range(3)]
    rate_single = np.mean([np.mean(lg.argmax(1) == t) for _, t, lg in single])
    adv, t, lg = run_attack(RestartAttacker(PGDAttacker(48, 2, 1, seed=0), 8), clean, labels, model, seed=0)
    rate_restart = np.mean(lg.argmax(1) == t)
    assert rate_restart > rate_single + 0.02, (rate_single, rate_restart)
    # with evaluation's per-image draws every restart must still start elsewhere: the first
    # start is the single attack's, and the other 7 raise the success rate above it
    one, t1, lg1 = run_attack(PGDAttacker(48, 2, 1, per_image_seed=0), clean, labels, model)
    best, t8, lg8 = run_attack(RestartAttacker(PGDAttacker(48, 2, 1, per_image_seed=0), 8), clean, labels, model)
    np.testing.assert_array_equal(t8, t1)                      # the same targets
    assert np.mean(lg8.argmax(1) == t8) > np.mean(lg1.argmax(1) == t1) + 0.02


def test_bad_attack_settings_are_refused():
    with pytest.raises(attacks.AttackError, match="epsilon"):
        make_attacker("pgd", 10, epsilon=-1)
    with pytest.raises(attacks.AttackError, match="iterations"):
        make_attacker("pgd", -3)
    with pytest.raises(attacks.AttackError, match="larger than epsilon"):
        make_attacker("pgd", 10, epsilon=4, step_size=8)
    with pytest.raises(attacks.AttackError, match="valid: pgd"):
        make_attacker("cw2", 10)


def test_per_image_metrics():
    logits = np.array([[5, 4, 3, 2, 1, 0, -1], [0, 1, 2, 3, 4, 5, 6], [0, 9, 1, 2, 3, 4, 5]], np.float32)
    label = np.array([0, 0, 2], np.int32)
    target = np.array([1, 6, 1], np.int32)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        m = sess.run(per_image_metrics(tf.constant(logits), tf.constant(label), tf.constant(target)))
        mu = sess.run(per_image_metrics(tf.constant(logits), tf.constant(label), tf.constant(label), False))
    np.testing.assert_array_equal(m["top1_error"], [0, 1, 1])
    np.testing.assert_array_equal(m["top5_error"], [0, 1, 1])   # label 2 is 6th of row 3
    np.testing.assert_array_equal(m["attack_success"], [0, 1, 1])
    np.testing.assert_array_equal(mu["attack_success"], [0, 1, 1])


# --------------------------------------------------------------------- on real networks
SMALL = dict(family="small", depth=14, width=4, num_classes=K, image_size=12, image_channels=1)


def _build_training_tower(spec, attacker):
    model = AdvModel(spec, train_attacker=attacker)
    image = tfv1.placeholder(tf.uint8, [None, 12, 12, 1])
    label = tfv1.placeholder(tf.int32, [None])
    with TowerContext("", is_training=True):
        cost = model.build_graph(image, label)
    return image, label, cost


def _randomise(sess, rng, denoise_gamma=None):
    """Keep the He-initialised convs; give BN and the classifier non-trivial values (the
    zero-initialised gammas would otherwise cut every residual branch)."""
    for v in tfv1.global_variables():
        shape = v.shape.as_list()
        if v.op.name.endswith("gamma"):
            scale = denoise_gamma if (denoise_gamma and "_denoise/" in v.op.name) else 1.0
            v.load(scale * rng.uniform(0.5, 1.5, shape).astype("float32"), sess)
        elif v.op.name.endswith("beta"):
            v.load((rng.randn(*shape) * 0.1).astype("float32"), sess)
        elif v.op.name == "linear/W":
            v.load((rng.randn(*shape) * 0.3).astype("float32"), sess)


def test_attack_changes_no_variable_and_no_bn_statistic():
    spec = ArchSpec(denoise=DenoiseSpec("nonlocal"), **SMALL)
    g = tf.Graph()
    with g.as_default():
        image, label, _ = _build_training_tower(spec, PGDAttacker(16, 2, 5))
        adv = g.get_tensor_by_name("adv_image:0")
        variables = tfv1.global_variables()
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            _randomise(sess, np.random.RandomState(0))
            before = sess.run(variables)
            feed = {image: np.random.RandomState(1).randint(0, 256, (8, 12, 12, 1)), label: np.arange(8) % K}
            a = sess.run(adv, feed)
            after = sess.run(variables)
    assert np.abs(a - (feed[image] * PIXEL_SCALE - 1)).max() > 0
    assert any("mean/EMA" in v.op.name for v in variables)
    for v, x, y in zip(variables, before, after):
        np.testing.assert_array_equal(x, y, err_msg=v.op.name)


def test_training_loss_sees_adversarial_images_only():
    """Sec. 5: "Our SGD update is based exclusively on adversarial images". Given the
    adversarial batch, the loss must not depend on the clean images at all."""
    spec = ArchSpec(**SMALL)
    g = tf.Graph()
    with g.as_default():
        image, label, _ = _build_training_tower(spec, PGDAttacker(16, 2, 3))
        adv = g.get_tensor_by_name("adv_image:0")
        loss = g.get_tensor_by_name("xentropy_loss:0")
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            _randomise(sess, np.random.RandomState(0))
            rng = np.random.RandomState(2)
            feed = {image: rng.randint(0, 256, (8, 12, 12, 1)), label: np.arange(8) % K}
            a, l_adv = sess.run([adv, loss], feed)
            l_same = sess.run(loss, {adv: a, image: feed[image], label: feed[label]})
            l_other_clean = sess.run(loss, {adv: a, image: np.zeros_like(feed[image]), label: feed[label]})
            l_clean = sess.run(loss, {adv: feed[image] * PIXEL_SCALE - 1, image: feed[image], label: feed[label]})
    assert l_same == pytest.approx(l_adv, rel=1e-6)
    assert l_other_clean == pytest.approx(l_adv, rel=1e-6)
    assert abs(l_clean - l_adv) > 1e-4        # the adversarial batch really is a different batch


@pytest.mark.parametrize("op", ["nonlocal", "nonlocal-dot", "bilateral", "bilateral-dot", "mean", "median",
                                "null"])
def test_pgd_backpropagates_through_every_denoising_op(op):
    """PGD through a network with the op in all four places (BN gammas non-zero, so the
    op contributes). Without the residual, every path crosses the op. The dot-product ops
    are cubic in x: without trained BN statistics four of them overflow, so they keep the
    residual and a small BN gamma after the op."""
    dot = op in ("nonlocal-dot", "bilateral-dot")
    spec = ArchSpec(denoise=DenoiseSpec(op, residual=dot), **SMALL)
    g = tf.Graph()
    with g.as_default():
        tfv1.set_random_seed(0)
        model = AdvModel(spec)
        image = tfv1.placeholder(tf.float32, [None, 12, 12, 1])
        label = tfv1.placeholder(tf.int32, [None])
        with TowerContext("", is_training=False):
            fn = lambda x: model.logits(x, training=False)  # noqa: E731
            clean_logits = fn(image)
            grad = tf.gradients(tf.reduce_sum(clean_logits[:, 0]), image)[0]
            adv, _ = PGDAttacker(32, 4, 10, targeted=False).attack(image, label, fn, K)
            adv_logits = fn(adv)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            _randomise(sess, np.random.RandomState(0), denoise_gamma=0.01 if dot else None)
            x = np.random.RandomState(3).uniform(-0.5, 0.5, (16, 12, 12, 1)).astype("float32")
            c = sess.run(clean_logits, {image: x})
            gr, a = sess.run([grad, adv_logits], {image: x, label: c.argmax(1).astype("int32")})
    assert np.abs(gr).max() > 0

    def margin(logits, cls):
        own = logits[np.arange(len(cls)), cls]
        other = np.where(np.eye(K, dtype=bool)[cls], -np.inf, logits).max(1)
        return own - other

    pred = c.argmax(1)
    # the attack moved every image towards misclassification, by a clear amount
    assert np.mean(margin(a, pred) < margin(c, pred) - 1e-3) >= 0.9
    assert np.mean(margin(a, pred) / margin(c, pred)) < 0.9


# ------------------------------------------------------------------------------------------
# The whole iterative loop against a numpy reimplementation, on a model whose gradient signs
# change from one iteration to the next (so the step size, the projection and the momentum
# all show in the result: on a linear model every pixel just runs to the ball's surface).

QUAD_A = np.random.RandomState(5).randn(K, K).astype("float32")


def quadratic_model(x):
    """logits = (x * x) A: the gradient 2 x (A (onehot - p)) flips sign as pixels cross 0."""
    flat = tf.reshape(x, [-1, K])
    return tf.matmul(flat * flat, QUAD_A)


def _reference_objective_gradient(x, label, target, loss, targeted):
    flat = x.reshape(len(x), K).astype(np.float64)
    z = (flat * flat) @ QUAD_A
    onehot = lambda c: np.eye(K)[c]
    if loss == "xent":
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = onehot(target) - p if targeted else p - onehot(label)
    else:   # CW margin: z_c - max_{j != c} z_j, for c = target (ascend) or label (descend)
        c = target if targeted else label
        others = np.where(onehot(c) > 0, -np.inf, z).argmax(1)
        dz = (onehot(c) - onehot(others)) * (1 if targeted else -1)
    return (2 * flat * (dz @ QUAD_A.T)).reshape(x.shape)


def _reference_attack(clean, label, target, epsilon, step_size, iters, loss="xent", targeted=True, decay=None):
    """Sec. 6.1's rule step = max(step, epsilon / iterations); x <- Proj(x + step sign(g)), or
    with momentum g <- mu g + grad / mean|grad| (Dong et al.), all from the clean image."""
    eps, step = epsilon * PIXEL_SCALE, max(step_size, epsilon / iters) * PIXEL_SCALE
    adv, momentum = clean.astype(np.float64), np.zeros(clean.shape)
    for _ in range(iters):
        g = _reference_objective_gradient(adv, label, target, loss, targeted)
        if decay is not None:
            l1 = np.abs(g).mean(axis=(1, 2, 3), keepdims=True)
            momentum = decay * momentum + g / np.maximum(l1, 1e-12)
            g = momentum
        adv = np.clip(np.clip(adv + step * np.sign(g), clean - eps, clean + eps), -1, 1)
    return adv


@pytest.mark.parametrize("make, loss, targeted, decay", [
    (lambda: IFGSMAttacker(64, 16, 6), "xent", True, None),
    (lambda: PGDAttacker(64, 16, 6, targeted=False, prob_start_from_clean=1.0), "xent", False, None),
    (lambda: IFGSMAttacker(64, 16, 6, loss="cw"), "cw", True, None),
    (lambda: MIFGSMAttacker(64, 16, 6), "xent", True, 1.0),
], ids=["ifgsm-targeted", "pgd-from-clean-untargeted", "ifgsm-cw", "mifgsm"])
def test_iterative_attacks_equal_a_numpy_reference(make, loss, targeted, decay):
    clean, labels = random_images(n=32, seed=3)
    clean *= 0.5                                   # room for the steps inside [-1, 1]
    adv, target, _ = run_attack(make(), clean, labels, quadratic_model, seed=0)
    expected = _reference_attack(clean, labels, target, 64, 16, 6, loss, targeted, decay)
    np.testing.assert_allclose(adv, expected, atol=1e-5)
    # the test can see the step: many pixels end strictly inside the ball, where a wrong
    # step size would have left them elsewhere
    inside = np.abs(np.abs(adv - clean) - 64 * PIXEL_SCALE) > 1e-4
    assert inside.mean() > 0.2, inside.mean()
    wrong_step = _reference_attack(clean, labels, target, 64, 20, 6, loss, targeted, decay)
    assert np.abs(wrong_step - expected).max() > 1e-2
    if decay is not None:                          # and the momentum changes the result here
        plain = _reference_attack(clean, labels, target, 64, 16, 6, loss, targeted, None)
        assert np.abs(plain - expected).max() > 1e-2


@pytest.mark.parametrize("loss", ["xent", "cw"])
@pytest.mark.parametrize("targeted", [True, False], ids=["targeted", "untargeted"])
def test_attack_objectives_equal_numpy(loss, targeted):
    """attacks/losses.py against the formulas: targeted xent maximises log p_t (Sec. 5: descend
    the loss of the adversarial target), untargeted -log p_y; CW maximises z_t - max_{j != t} z_j,
    or max_{j != y} z_j - z_y."""
    from attacks.losses import attack_objective
    rng = np.random.RandomState(2)
    logits = (rng.randn(50, K) * 3).astype("float32")
    label, target = rng.randint(0, K, 50), rng.randint(0, K, 50)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        ours = sess.run(attack_objective(loss, tf.constant(logits), tf.constant(label), tf.constant(target), targeted))
    z = logits.astype(np.float64)
    c = target if targeted else label
    rows = np.arange(50)
    if loss == "xent":
        log_p = z - z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        expected = log_p[rows, c] if targeted else -log_p[rows, c]
    else:
        others = np.array([np.max(np.delete(z[i], c[i])) for i in rows])
        margin = z[rows, c] - others
        expected = margin if targeted else -margin
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_ties_and_non_finite_logits_count_as_errors():
    """A tie at the top-k boundary is an error (tf.nn.in_top_k would count it correct), so
    constant logits score 100% top-1 error; a non-finite logit is an error and is counted; a
    targeted attack hits its target only when the target is strictly on top."""
    nan, inf = float("nan"), float("inf")
    logits = np.array([[1, 1, 1, 1, 1, 1, 1],          # constant: every class ties
                       [3, 3, 0, 0, 0, 0, 0],          # the label ties for first place
                       [0, 5, 4, 3, 2, 2, 1],          # label 6 (1.0) is 7th: top-5 error
                       [0, 5, 4, 3, 2, 1, 1],          # label 5 ties with 6 for 6th place: top-5 error
                       [0, 5, 4, 3, 3, 1, 1],          # label 3 ties with 4 below 2 others: top-5 correct
                       [9, 0, 0, 0, 0, 0, nan],        # a NaN: an error whatever the rest
                       [9, 0, 0, 0, 0, inf, 0],
                       [9, 0, 0, 0, 0, 0, 0]], np.float32)
    label = np.array([0, 0, 6, 5, 3, 0, 0, 0], np.int32)
    target = np.array([1, 1, 1, 1, 1, 1, 5, 1], np.int32)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        m = sess.run(per_image_metrics(tf.constant(logits), tf.constant(label), tf.constant(target)))
        u = sess.run(per_image_metrics(tf.constant(logits), tf.constant(label), tf.constant(label), False))
    np.testing.assert_array_equal(m["top1_error"], [1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(m["top5_error"], [1, 0, 1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(m["attack_success"], [0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(m["non_finite_logits"], [0, 0, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(u["attack_success"], m["top1_error"])
