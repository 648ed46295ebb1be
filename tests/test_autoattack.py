"""AutoAttack's members and the threat models against independent references: closed-form
optima of linear models, a numpy implementation of APGD's Algorithm 1, scipy's solvers for
the projections, and the invariants of each attack (the ball, the range, the query budget,
no gradient for Square, the worst case over restarts and members)."""
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from attack_builders import FGSMAttacker, IFGSMAttacker, MIFGSMAttacker, PGDAttacker, RestartAttacker
from attacks import (PIXEL_SCALE, Draws, L2Ball, LinfBall, make_attacker, make_member, make_threat)
from attacks.apgd import APGDAttacker
from attacks.fab import FABAttacker, project_onto_hyperplane
from attacks.losses import attack_objective
from attacks.square import SquareAttacker

tfv1 = tf.compat.v1
K = 10


def session_run(build):
    g = tf.Graph()
    with g.as_default():
        fetches = build()
        with tfv1.Session() as sess:
            return sess.run(fetches)


def dense_model(d, k, seed=0, scale=1.0):
    rng = np.random.RandomState(seed)
    w = (rng.randn(d, k) * scale).astype("float32")
    b = rng.randn(k).astype("float32")
    return w, b, (lambda x: tf.matmul(tf.reshape(x, [-1, d]), w) + b)


def norm_of(delta, norm):
    flat = delta.reshape(len(delta), -1)
    return np.abs(flat).max(1) if norm == "linf" else np.linalg.norm(flat, axis=1)


# ------------------------------------------------------------------------- threat models
@pytest.mark.parametrize("seed", range(4))
def test_l2_projection_is_the_nearest_point_of_ball_and_range(seed):
    """The exact projection against scipy's constrained minimisation, with the box binding."""
    rng = np.random.RandomState(seed)
    clean = rng.uniform(-1, 1, (3, 6)).astype("float32")
    clean[:, :2] = np.sign(clean[:, :2]) * 0.95                 # near the range's edge
    point = clean + rng.randn(3, 6).astype("float32") * 0.8
    threat = L2Ball(255.0 * 0.6 / 2)                            # radius 0.6 in model space
    ours = session_run(lambda: threat.project(tf.constant(point), tf.constant(clean)))
    for i in range(3):
        cons = [{"type": "ineq", "fun": lambda z, c=clean[i]: threat.eps ** 2 - np.sum((z - c) ** 2)}]
        res = scipy.optimize.minimize(lambda z, p=point[i]: np.sum((z - p) ** 2), np.clip(clean[i], -1, 1),
                                      bounds=[(-1, 1)] * 6, constraints=cons, method="SLSQP",
                                      options={"ftol": 1e-12, "maxiter": 500})
        assert res.success
        np.testing.assert_allclose(ours[i], res.x, atol=2e-4)
        assert np.linalg.norm(ours[i] - clean[i]) <= threat.eps * (1 + 1e-5)


def test_l2_random_start_is_uniform_in_the_ball():
    """Radius distribution of a uniform draw in a d-ball: P(r <= t eps) = t^d (d = 4 here;
    distinct images, so every one has its own per-image draw; the range never binds)."""
    threat = L2Ball(255.0 * 0.5 / 2)
    rng = np.random.RandomState(0)
    pixels = rng.randint(100, 156, (4000, 2, 2, 1))
    clean = (pixels * PIXEL_SCALE - 1).astype("float32")
    draws = Draws(0, per_image=True)

    def build():
        x = tf.constant(clean)
        return threat.project(x + draws.start_noise(threat, x, draws.keys(x)), x)
    start = session_run(build)
    r = np.linalg.norm((start - clean).reshape(4000, -1), axis=1) / threat.eps
    assert r.max() <= 1 + 1e-5
    for t in (0.5, 0.8, 0.95):
        assert abs(np.mean(r <= t) - t ** 4) < 0.05, (t, np.mean(r <= t))


# ------------------------------------------------------------------------- APGD
# Algorithm 1's checkpoints for N = 100: p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03,
# 0.06), w_j = ceil(p_j N): 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of the iterations
CHECKPOINTS_100 = (22, 41, 57, 70, 80, 87, 93, 99)


def test_apgd_halves_its_step_at_algorithm_1s_checkpoints():
    """On a model whose loss never changes, condition 1 (the loss rose in fewer than 75% of
    the window's steps) holds at every checkpoint, so the step the attack takes halves after
    exactly the checkpoints' iteration counts."""
    x = np.random.RandomState(0).uniform(-0.5, 0.5, (3, 2, 2, 1)).astype("float32")
    y = np.zeros(3, np.int32)
    constant = lambda v: 0.0 * tf.reduce_sum(v, axis=[1, 2, 3])[:, None] + tf.constant([[3.0, 0.0, 0.0]])
    attacker = APGDAttacker(LinfBall(8.0), 100, "xent", draws=Draws(0, per_image=True))
    attacker.trace_steps = True
    _, _, steps = session_run(lambda: attacker.run(tf.constant(x), tf.constant(y), constant,
                                                   keys=Draws(0, per_image=True).keys(tf.constant(x))))
    expected = [2 * 8.0 * PIXEL_SCALE * 0.5 ** sum(c <= i for c in CHECKPOINTS_100) for i in range(100)]
    np.testing.assert_allclose(steps, np.repeat(np.array(expected)[:, None], 3, axis=1), rtol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_reaches_the_closed_form_optimum_of_a_linear_model(norm):
    """Two classes, a linear model: the cross-entropy grows with z_other - z_y, whose maximum
    over the ball is epsilon ||w_other - w_y||_1 (L-inf) or _2 (L2) when the range does not bind."""
    d = 20
    w, b, model = dense_model(d, 2)
    rng = np.random.RandomState(1)
    x = rng.uniform(-0.2, 0.2, (32, d, 1, 1)).astype("float32")
    y = (x.reshape(32, d) @ w + b).argmax(1).astype("int32")      # correctly classified: all attacked
    threat = make_threat(norm, 8.0 if norm == "linf" else 30.0)
    attacker = APGDAttacker(threat, 100, "xent", draws=Draws(0, per_image=True))
    # one run returns the highest-loss point of every image (the attack keeps the clean image
    # where no run broke it)
    (adv, broken), (final, _, queries) = session_run(lambda: (
        attacker.run(tf.constant(x), tf.constant(y), model, keys=Draws(0, per_image=True).keys(tf.constant(x))),
        attacker.attack_info(tf.constant(x), tf.constant(y), model, 2)))
    assert 0 < broken.sum() < 32
    np.testing.assert_array_equal(final[~broken], x[~broken])
    delta = (adv - x).reshape(32, d)
    direction = (w[:, 1 - y] - w[:, y]).T
    optimum = threat.eps * (np.abs(direction).sum(1) if norm == "linf" else np.linalg.norm(direction, axis=1))
    gain = (direction * delta).sum(1)
    assert np.all(gain >= 0.999 * optimum), (gain / optimum).min()
    assert np.all(norm_of(delta, norm) <= threat.eps * (1 + 1e-5))
    np.testing.assert_array_equal(queries, 1 + 101)          # the clean prediction, the start and 100 steps


QUAD = np.random.RandomState(7).randn(K, K).astype("float32")


def quadratic(x):
    return tf.matmul(tf.square(tf.reshape(x, [-1, K])), QUAD)


def _ce_and_gradient(x, y):
    """Untargeted cross-entropy of the quadratic model and its gradient (float32, as the
    graph computes them, so that late halvings of the step follow the same path)."""
    flat = x.reshape(len(x), K).astype(np.float32)
    z = (flat * flat) @ QUAD
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y])
    dz = p - np.eye(K)[y]
    return loss, (2 * flat * (dz @ QUAD.T)).reshape(x.shape), (flat * flat @ QUAD).argmax(1)


def _apgd_numpy(clean, y, start, eps, n_iter, checks=CHECKPOINTS_100):
    """Algorithm 1 of Croce and Hein (2020), L-infinity, one image at a time, with the
    checkpoints ``checks`` (iteration counts) written out from the paper's rule."""
    out = []
    for i in range(len(clean)):
        c, label = clean[i:i + 1].astype(np.float32), y[i:i + 1]

        def proj(z):
            return np.clip(np.clip(z, c - eps, c + eps), -1, 1)
        x = start[i:i + 1].astype(np.float32)
        loss, grad, pred = _ce_and_gradient(x, label)
        best_x, best_f, best_g = x, loss[0], grad
        adv, broken = x, pred[0] != label[0]
        step, x_prev = np.float32(2 * eps), x
        rises, f_prev, last_check = 0, loss[0], 0
        f_check, reduced = best_f, True
        for k in range(n_iter):
            a = np.float32(1.0 if k == 0 else 0.75)
            z = proj(x + step * np.sign(grad))
            x_prev, x = x, proj(x + a * (z - x) + (np.float32(1) - a) * (x - x_prev))
            loss, grad, pred = _ce_and_gradient(x, label)
            if pred[0] != label[0]:
                adv, broken = x, True
            rises += loss[0] > f_prev
            f_prev = loss[0]
            if loss[0] > best_f:
                best_x, best_f, best_g = x, loss[0], grad
            if k + 1 in checks:
                window = k + 1 - last_check
                cut = rises <= 0.75 * window or (not reduced and f_check >= best_f)
                if cut:
                    step = np.float32(step / 2)
                    x, grad = best_x, best_g
                reduced, f_check, rises, last_check = cut, best_f, 0, k + 1
        out.append(adv if broken else best_x)
    return np.concatenate(out)


def test_apgd_equals_a_numpy_implementation_of_algorithm_1():
    """The whole loop over 100 iterations: momentum, checkpoints, halving and restarts from the
    best point, on a model whose gradient signs change (so every part of the schedule shows in
    the result). Sign steps land on the ball's corners and revisit points, where two float32
    implementations break ties between equal losses differently, so the outcome is compared,
    not the points: the same images broken, and on the others the same best loss."""
    rng = np.random.RandomState(3)
    clean = rng.uniform(-0.5, 0.5, (24, K, 1, 1)).astype("float32")
    y = (clean.reshape(24, K) ** 2 @ QUAD).argmax(1).astype("int32")
    eps = 8 * PIXEL_SCALE
    start = np.clip(clean + rng.uniform(-eps, eps, clean.shape), -1, 1).astype("float32")
    attacker = APGDAttacker(LinfBall(8.0), 100, "xent", draws=Draws(0, per_image=True))
    ours, broken = session_run(lambda: attacker.run(tf.constant(clean), tf.constant(y), quadratic,
                                                    start=tf.constant(start)))
    expected = _apgd_numpy(clean, y, start, eps, 100)
    ours_loss, _, ours_pred = _ce_and_gradient(ours, y)
    loss, _, pred = _ce_and_gradient(expected, y)
    start_loss = _ce_and_gradient(start, y)[0]
    np.testing.assert_array_equal(broken, ours_pred != y)
    np.testing.assert_array_equal(ours_pred != y, pred != y)
    assert 0 < broken.sum() < 24                               # both outcomes are compared
    np.testing.assert_allclose(ours_loss[~broken], loss[~broken], rtol=1e-5)
    assert np.all(loss[~broken] > start_loss[~broken] + 0.05)    # the test sees the run


def test_targets_are_the_classes_after_the_best_in_clean_logit_order():
    """APGD-T's and FAB-T's j-th target (j = 1 .. k) is the class with the (j+1)-th highest
    clean logit."""
    from attacks.apgd import ranked_classes
    z = np.random.RandomState(4).randn(30, 7).astype("float32")
    order = session_run(lambda: ranked_classes(tf.constant(z)))
    for j in range(1, 7):
        np.testing.assert_array_equal(order[:, j], np.argsort(-z, 1)[:, j])
    assert np.all(order[:, 0] == z.argmax(1))


# ------------------------------------------------------------------------- FAB-T
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_minimal_distance_of_a_linear_model(norm):
    d = 16
    w, b, model = dense_model(d, 5)
    x = np.random.RandomState(0).uniform(-0.3, 0.3, (24, d, 1, 1)).astype("float32")
    z = x.reshape(24, d) @ w + b
    y = z.argmax(1).astype("int32")
    t = np.argsort(-z, 1)[:, 1]
    threat = make_threat(norm, 255.0)
    _, dist = session_run(lambda: FABAttacker(threat, 30, targets=1).run(
        tf.constant(x), tf.constant(y), tf.constant(t.astype("int32")), model))
    wv = (w[:, t] - w[:, y]).T
    f = np.abs(z[np.arange(24), t] - z[np.arange(24), y])
    exact = f / (np.linalg.norm(wv, axis=1) if norm == "l2" else np.abs(wv).sum(1)) / PIXEL_SCALE
    assert np.all(dist >= exact * (1 - 1e-4)) and np.all(dist <= exact * 1.02), (dist / exact)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_fab_projection_solves_the_constrained_problem(norm, seed):
    """The minimal perturbation onto a hyperplane within the range, against scipy (SLSQP for
    L2, a linear program for L-inf), with the box binding on some coordinates."""
    rng = np.random.RandomState(seed)
    point = rng.uniform(-0.9, 0.9, (2, 5)).astype("float32")
    w = rng.randn(2, 5).astype("float32")
    b = (w * point).sum(1) + np.array([0.8, -0.6], np.float32)
    ours = session_run(lambda: project_onto_hyperplane(norm, tf.constant(point), tf.constant(w), tf.constant(b)))
    for i in range(2):
        lo, hi = -1 - point[i], 1 - point[i]
        if norm == "l2":
            res = scipy.optimize.minimize(lambda d: np.sum(d ** 2), np.zeros(5), method="SLSQP",
                                          bounds=list(zip(lo, hi)),
                                          constraints=[{"type": "eq", "fun": lambda d, i=i: w[i] @ d - (b[i] - w[i] @
                                                                                                        point[i])}],
                                          options={"ftol": 1e-12, "maxiter": 500})
            best = res.x
        else:   # minimise t with |d_j| <= t, w.d = need, lo <= d <= hi; variables (d, t)
            c = np.r_[np.zeros(5), 1.0]
            a_ub = np.r_[np.c_[np.eye(5), -np.ones(5)], np.c_[-np.eye(5), -np.ones(5)]]
            res = scipy.optimize.linprog(c, A_ub=a_ub, b_ub=np.zeros(10), A_eq=np.r_[w[i], 0.0][None],
                                         b_eq=[b[i] - w[i] @ point[i]], bounds=list(zip(lo, hi)) + [(0, None)])
            best = res.x[:5]
        assert res.success
        assert norm_of(ours[i:i + 1], norm)[0] <= norm_of(best[None], norm)[0] * (1 + 1e-3) + 1e-6
        assert abs(w[i] @ ours[i] - (b[i] - w[i] @ point[i])) < 1e-3
        assert np.all(ours[i] >= lo - 1e-6) and np.all(ours[i] <= hi + 1e-6)


# ------------------------------------------------------------------------- Square
def test_square_never_builds_a_gradient():
    """A network whose gradient raises when it is built: Square runs, PGD cannot."""
    w, b, dense = dense_model(4, K)

    def no_gradient_model(x):
        @tf.custom_gradient
        def forward(v):
            def grad(dy):
                raise AssertionError("a gradient of the network was built")
            return dense(v), grad
        return forward(x)

    x = np.random.RandomState(0).uniform(-0.5, 0.5, (8, 2, 2, 1)).astype("float32")
    y = np.arange(8, dtype=np.int32) % K
    for threat in (LinfBall(32.0), L2Ball(128.0)):
        adv, _, queries = session_run(lambda: SquareAttacker(threat, 50, draws=Draws(0, per_image=True))
                                      .attack_info(tf.constant(x), tf.constant(y), no_gradient_model, K))
        assert adv.shape == x.shape and queries.max() <= 51
    with pytest.raises(AssertionError, match="gradient of the network"):
        session_run(lambda: PGDAttacker(16, 1, 2).attack(tf.constant(x), tf.constant(y), no_gradient_model, K))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_uses_exactly_its_query_budget_on_images_it_cannot_break(norm):
    """A model that always predicts class 0 by a wide margin: every image of class 0 stands,
    and each uses the start and every one of the budget's iterations (the authors' count:
    n_queries iterations after the start); images of other classes start misclassified and
    stop after one query."""
    w = np.zeros((4, K), np.float32)
    bias = np.r_[50.0, np.zeros(K - 1)].astype("float32")

    def model(x):
        return tf.matmul(tf.reshape(x, [-1, 4]), w) + bias + 0.0 * tf.reduce_sum(x)
    x = np.random.RandomState(1).uniform(-0.5, 0.5, (6, 2, 2, 1)).astype("float32")
    y = np.array([0, 0, 0, 3, 3, 0], np.int32)
    adv, _, queries = session_run(lambda: SquareAttacker(make_threat(norm, 32.0), 37, draws=Draws(0, per_image=True))
                                  .attack_info(tf.constant(x), tf.constant(y), model, K))
    np.testing.assert_array_equal(queries, [38, 38, 38, 1, 1, 38])


# The authors' p_selection, written out: p_init halves once the iteration (of 10,000; with
# rescaling, int(i / budget * 10000)) exceeds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000;
# the side is round(sqrt(p h w)), at least 1 (L-inf) or 3 and odd (L2). For 28 x 28 images and
# p_init = 0.8: sides 25, 18, 13, 9, 6, 4, 3, 2, (2), 1 after 0 .. 9 halvings.
LINF_SIDES_28 = (25, 18, 13, 9, 6, 4, 3, 2, 2, 1)
# AutoAttack (resc_schedule=False) at 5,000 queries: the first iteration of each side
AUTOATTACK_CHANGES_5000 = {0: 25, 11: 18, 51: 13, 201: 9, 501: 6, 1001: 4, 2001: 3, 4001: 2}
# the Square paper's rescaled schedule at 5,000 queries: twice as fast
RESCALED_CHANGES_5000 = {0: 25, 6: 18, 26: 13, 101: 9, 251: 6, 501: 4, 1001: 3, 2001: 2, 4001: 1}


def _changes(sides):
    return {i: s for i, s in enumerate(sides) if i == 0 or s != sides[i - 1]}


def test_square_schedules_are_autoattacks_in_the_ensemble_and_rescaled_alone():
    from attacks import autoattack_members
    ensemble = autoattack_members("standard", "linf", 8.0)["square"]
    alone = make_attacker("square", 5000, 8.0, per_image_seed=0)
    assert not ensemble.rescale_schedule and alone.rescale_schedule
    assert _changes(ensemble.sides(28 * 28, limit=28)) == AUTOATTACK_CHANGES_5000
    assert _changes(alone.sides(28 * 28, limit=28)) == RESCALED_CHANGES_5000
    assert len(ensemble.sides(784)) == 5000
    # L2: odd sides of at least 3, the same halving points
    l2 = autoattack_members("standard", "l2", 128.0)["square"]
    assert _changes(l2.sides(784, 3, odd=True, limit=28)) == {0: 25, 11: 19, 51: 13, 201: 9, 501: 7, 1001: 5,
                                                             2001: 3}
    # every halving at 10,000 queries, unrescaled
    full = SquareAttacker(LinfBall(8.0), 10000, rescale_schedule=False).sides(784)
    assert [full[i] for i in (0, 11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001)] == list(LINF_SIDES_28)


def _numpy_l2_candidate(clean, delta, w1, w2, pattern, eps):
    """Algorithm 3 of the Square paper, one image and channel at a time, with the authors'
    code's two choices (the norm over W1 u W2 on all channels; the rescale to eps and the clip):
    nu_W1,i <- (rho eta + nu_W1,i / ||nu_W1,i||) scaled to sqrt(||nu_W1uW2||^2 + eps_unused^2 / c),
    nu_W2,i <- 0."""
    out = np.empty_like(clean)
    for b in range(len(clean)):
        nu = delta[b].astype(np.float64).copy()
        c = nu.shape[-1]
        m1, m2 = w1[b, :, :, 0] > 0, w2[b, :, :, 0] > 0
        unused = max(eps ** 2 - np.sum(nu ** 2), 0.0)
        both = np.sqrt(np.sum(nu[m1 | m2] ** 2))
        for i in range(c):
            old = nu[:, :, i][m1]
            temp = pattern[b, :, :, i][m1] + old / (1e-12 + np.linalg.norm(old))
            avail = np.sqrt(both ** 2 + unused / c)
            nu[:, :, i][m2] = 0.0
            nu[:, :, i][m1] = temp / np.linalg.norm(temp) * avail
        out[b] = np.clip(clean[b] + nu / np.linalg.norm(nu) * eps, -1, 1)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_square_l2_candidate_equals_a_numpy_derivation_of_algorithm_3(channels):
    from attacks.square import l2_candidate, meta_pattern
    rng = np.random.RandomState(channels)
    b, h = 4, 9
    clean = rng.uniform(-0.9, 0.9, (b, h, h, channels)).astype("float32")
    eps = 0.7
    delta = rng.randn(b, h, h, channels).astype("float32")
    delta *= (0.8 * eps / np.linalg.norm(delta.reshape(b, -1), axis=1))[:, None, None, None]
    w1, w2, pattern = np.zeros((b, h, h, 1), np.float32), np.zeros((b, h, h, 1), np.float32), np.zeros_like(clean)
    side = 3
    for i in range(b):
        (t1, l1), (t2, l2) = rng.randint(0, h - side, (2, 2))
        w1[i, t1:t1 + side, l1:l1 + side] = 1
        w2[i, t2:t2 + side, l2:l2 + side] = 1
        eta = meta_pattern(side).T if i % 2 else meta_pattern(side)
        pattern[i, t1:t1 + side, l1:l1 + side] = eta[:, :, None] * rng.choice([-1, 1], channels)
    ours = session_run(lambda: l2_candidate(tf.constant(clean), tf.constant(delta), tf.constant(w1), tf.constant(w2),
                                            tf.constant(pattern), eps))
    expected = _numpy_l2_candidate(clean, delta, w1, w2, pattern, eps)
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    assert np.abs(ours - clean - delta).max() > 0.05              # the window really changed


# ------------------------------------------------------------------------- every attacker
ATTACKS = {
    "pgd": lambda t: PGDAttacker(t.epsilon, 4, 5, norm=t.norm, per_image_seed=0),
    "pgd-untargeted": lambda t: PGDAttacker(t.epsilon, 4, 5, norm=t.norm, targeted=False, seed=1),
    "fgsm": lambda t: FGSMAttacker(t.epsilon, norm=t.norm),
    "ifgsm": lambda t: IFGSMAttacker(t.epsilon, 4, 5, norm=t.norm),
    "mifgsm": lambda t: MIFGSMAttacker(t.epsilon, 4, 5, norm=t.norm),
    "restarts": lambda t: RestartAttacker(PGDAttacker(t.epsilon, 4, 3, norm=t.norm, per_image_seed=0), 3),
    "apgd-ce": lambda t: make_member("apgd-ce", 10, t.epsilon, t.norm),
    "apgd-t": lambda t: make_member("apgd-t", 5, t.epsilon, t.norm, targets=3),
    "fab-t": lambda t: make_member("fab-t", 10, t.epsilon, t.norm, targets=3),
    "square": lambda t: make_member("square", 10, t.epsilon, t.norm, queries=40),
}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", list(ATTACKS))
def test_every_attacker_stays_in_its_ball_and_the_range(kind, norm):
    rng = np.random.RandomState(2)
    x = rng.uniform(-1, 1, (24, 5, 2, 1)).astype("float32")
    x[:8] = np.sign(x[:8]) * 0.99                                # at the range's edges
    y = rng.randint(0, K, 24).astype("int32")
    _, _, model = dense_model(10, K, seed=3)
    threat = make_threat(norm, 24.0 if norm == "linf" else 120.0)
    adv, _ = session_run(lambda: ATTACKS[kind](threat).attack(tf.constant(x), tf.constant(y), model, K))
    assert np.all(norm_of(adv - x, norm) <= threat.eps * (1 + 1e-5) + 1e-6)
    assert adv.min() >= -1 - 1e-6 and adv.max() <= 1 + 1e-6
    assert np.abs(adv - x).max() > 0                              # it did move something


def test_restarts_never_leave_correct_an_image_a_single_run_broke():
    """The first restart is the single run (same per-image draws), and a misclassifying
    restart always wins: per image, restarts only add broken images."""
    rng = np.random.RandomState(5)
    x = rng.uniform(-0.6, 0.6, (200, 5, 2, 1)).astype("float32")
    _, _, model = dense_model(10, K, seed=4)
    y = session_run(lambda: tf.argmax(model(tf.constant(x)), axis=1, output_type=tf.int32))
    for targeted in (True, False):
        def broken(attacker):
            adv, _ = session_run(lambda: attacker.attack(tf.constant(x), tf.constant(y), model, K))
            return session_run(lambda: tf.argmax(model(tf.constant(adv)), 1, output_type=tf.int32)) != y
        one = broken(PGDAttacker(12, 2, 3, targeted=targeted, per_image_seed=0))
        many = broken(RestartAttacker(PGDAttacker(12, 2, 3, targeted=targeted, per_image_seed=0), 6))
        assert one.sum() > 5 and not np.any(one & ~many), (one.sum(), np.sum(one & ~many))
        assert many.sum() > one.sum()


@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_loss_equals_its_formula(targeted):
    rng = np.random.RandomState(6)
    z = (rng.randn(40, K) * 3).astype("float32")
    y, t = rng.randint(0, K, 40), rng.randint(0, K, 40)
    ours = session_run(lambda: attack_objective("dlr", tf.constant(z), tf.constant(y), tf.constant(t), targeted))
    s = np.sort(z, 1)[:, ::-1].astype(np.float64)
    own = z[np.arange(40), y]
    if targeted:
        expected = -(own - z[np.arange(40), t]) / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3]) + 1e-12)
    else:
        other = np.array([np.max(np.delete(z[i], y[i])) for i in range(40)])
        expected = -(own - other) / (s[:, 0] - s[:, 2] + 1e-12)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_member_settings_are_checked():
    from attacks import AttackError
    with pytest.raises(AttackError, match="query budget"):
        SquareAttacker(LinfBall(8.0), 0)
    with pytest.raises(AttackError, match="at least 4 classes"):
        session_run(lambda: APGDAttacker(LinfBall(8.0), 2, targets=2).attack(
            tf.zeros([2, 2, 2, 1]), tf.zeros([2], tf.int32), lambda v: tf.reshape(v, [-1, 4])[:, :3], 3))
    with pytest.raises(AttackError, match="unknown attack"):
        make_attacker("autoattack2", 10)


def test_member_settings_are_checked_and_restarts_never_ignored():
    from attacks import AttackError, autoattack_members
    with pytest.raises(AttackError, match="restart"):
        make_attacker("fgsm", 1, 8.0, restarts=2)
    with pytest.raises(AttackError, match="runs every member once"):
        autoattack_members("standard", restarts=3)
    with pytest.raises(AttackError, match="unknown AutoAttack version"):
        autoattack_members("fast")
    with pytest.raises(AttackError, match="eot"):
        make_member("square", eot=2)
    with pytest.raises(AttackError, match="--eot"):
        make_attacker("pgd", 10, 8.0, eot=0)
    assert [m.restarts for m in autoattack_members("plus", restarts=3).values()] == [3, 3, 3, 1, 1, 1]
    assert make_attacker("fab-t", 10, 8.0, restarts=4).restarts == 4
    assert make_attacker("square", 10, 8.0, restarts=2).restarts == 2


def test_versions_are_the_authors():
    """set_version of the authors' autoattack.py: the members, their order, restarts, targets,
    EOT draws and budgets of each version."""
    from attacks import autoattack_members
    summary = {v: [(name, getattr(m, "restarts", 1), getattr(m, "num_targets", None),
                    getattr(getattr(m, "precision", None), "eot", None), m.num_iter)
                   for name, m in autoattack_members(v).items()] for v in ("standard", "plus", "rand")}
    assert summary["standard"] == [("apgd-ce", 1, 0, 1, 100), ("apgd-t", 1, 9, 1, 100), ("fab-t", 1, 9, 1, 100),
                                   ("square", 1, None, None, 5000)]
    assert summary["plus"] == [("apgd-ce", 5, 0, 1, 100), ("apgd-dlr", 5, 0, 1, 100), ("fab", 5, 0, 1, 100),
                               ("square", 1, None, None, 5000), ("apgd-t", 1, 9, 1, 100), ("fab-t", 1, 9, 1, 100)]
    assert summary["rand"] == [("apgd-ce", 1, 0, 20, 100), ("apgd-dlr", 1, 0, 20, 100)]
    custom = autoattack_members("custom", attacks=["apgd-t", "apgd-ce"], eot=3)
    assert list(custom) == ["apgd-t", "apgd-ce"] and custom["apgd-ce"].restarts == 5
    assert custom["apgd-t"].precision.eot == 3


def _one_way_out(rank, k=10, d=64):
    """A linear model on 8 x 8 images whose clean image is class 0 (logit 200) and whose only
    reachable other class, c = rank - 1, has the ``rank``-th highest clean logit (20; 2 = the
    runner-up): every other class has no weight, so neither a run targeting it nor its
    gradient can move the logits, and only the run whose target is c breaks the image. At
    epsilon 4 (0.031 in model space) class c gains up to 100 * 64 * 0.031 = 200 > 180; a random
    start (FAB's, at half the radius) at most 100."""
    c = rank - 1
    bias = np.array([200.0] + [20.0 + (c - j) if j < c else 20.0 - (j - c) for j in range(1, k)], np.float32)
    w = np.zeros((d, k), np.float32)
    w[:, c] = 100.0
    return (lambda x: tf.matmul(tf.reshape(x, [-1, d]), w) + bias), bias


@pytest.mark.parametrize("member", ["apgd-t", "fab-t"])
def test_each_targeted_run_targets_the_next_class_in_clean_logit_order(member):
    """The runs of APGD-T and FAB-T go through the classes by decreasing clean logit, each
    with its restarts: where only class c can be reached, the image falls in the run whose
    target is c, as its query count shows (runs before it spent their whole budget)."""
    x = np.zeros((1, 8, 8, 1), np.float32)
    y = np.zeros(1, np.int32)
    n = 4
    for rank in (3, 10):
        model, bias = _one_way_out(rank)
        assert np.argsort(-bias)[rank - 1] == rank - 1 and bias.argmax() == 0
        for restarts in (1, 2):
            attacker = make_member(member, n, 4.0, targets=9, restarts=restarts)
            adv, _, queries = session_run(lambda: attacker.attack_info(tf.constant(x), tf.constant(y), model, 10))
            pred = session_run(lambda: tf.argmax(model(tf.constant(adv)), 1))
            assert pred[0] == rank - 1, (member, rank, restarts)
            per_run = (n + 1) if member == "apgd-t" else 2 * n
            runs_before = (rank - 2) * restarts                   # every restart of every earlier target
            assert queries[0] == 1 + (runs_before + 1) * per_run, (member, rank, restarts, queries)


def _randomised(seed, amplitude, omega=300.0):
    """A linear classifier behind a random input transformation T(x) = x + a s sin(omega x),
    s = +-1 drawn per pixel at every call: it moves the input by at most a (too little to
    change a prediction) but multiplies each pixel's gradient by 1 + a omega s cos(omega x),
    whose sign a single draw often gets wrong; its mean over draws is the linear gradient."""
    w, b, _ = dense_model(16, K, seed=seed)

    def model(x):
        s = tf.sign(tf.random.uniform(tf.shape(x), -1.0, 1.0)) if amplitude else 0.0
        t = x + amplitude * s * tf.sin(omega * x)
        return tf.matmul(tf.reshape(t, [-1, 16]), w) + b
    return model, w, b


def test_eot_is_stronger_on_a_randomised_model_and_the_same_on_a_deterministic_one():
    rng = np.random.RandomState(8)
    x = rng.uniform(-0.4, 0.4, (200, 4, 4, 1)).astype("float32")
    model, w, b = _randomised(5, 0.01)
    y = (x.reshape(200, 16) @ w + b).argmax(1).astype("int32")
    eps = 8.0

    def robust(eot, fn):
        attacker = make_member("apgd-ce", 20, eps, eot=eot)
        adv, _, _ = session_run(lambda: attacker.attack_info(tf.constant(x), tf.constant(y), fn, K))
        return adv, (adv.reshape(200, 16) @ w + b).argmax(1) == y      # the deterministic part decides
    _, single = robust(1, model)
    _, averaged = robust(16, model)
    assert averaged.mean() < single.mean() - 0.15, (single.mean(), averaged.mean())    # measured: 42% and 20%
    deterministic, _, _ = _randomised(5, 0.0)
    adv1, ok1 = robust(1, deterministic)
    adv4, ok4 = robust(4, deterministic)
    np.testing.assert_array_equal(adv1, adv4)
    np.testing.assert_array_equal(ok1, ok4)
    # PGD takes its gradients through the same path
    pgd = [session_run(lambda e=e: make_attacker("pgd", 5, eps, 2.0, targeted=False, per_image_seed=0, eot=e).attack(
        tf.constant(x), tf.constant(y), deterministic, K))[0] for e in (1, 3)]
    np.testing.assert_array_equal(pgd[0], pgd[1])


def test_restarts_of_fab_and_square_only_add_broken_images():
    """Restart 0 is the single run (same draws), later restarts run on what is still standing:
    per image, more restarts never leave correct an image fewer broke, and the extra runs show
    in the query counts of the images still standing."""
    rng = np.random.RandomState(9)
    x = rng.uniform(-0.6, 0.6, (100, K, 1, 1)).astype("float32")
    model = quadratic                     # not linear: FAB finds a linear model's optimum from any start
    y = session_run(lambda: tf.argmax(model(tf.constant(x)), axis=1, output_type=tf.int32))
    for kind, budget, eps in (("square", 20, 12.0), ("fab-t", 5, 12.0), ("fab", 5, 12.0)):
        def broken(restarts):
            attacker = make_member(kind, budget, eps, queries=budget, targets=2, restarts=restarts)
            adv, _, q = session_run(lambda: attacker.attack_info(tf.constant(x), tf.constant(y), model, K))
            return session_run(lambda: tf.argmax(model(tf.constant(adv)), 1, output_type=tf.int32)) != y, q
        one, q1 = broken(1)
        three, q3 = broken(3)
        assert 0 < one.sum() and not np.any(one & ~three), kind
        # Square's fresh searches find more; FAB's random starts at 5 iterations find the
        # boundary points the clean start found (measured: 92 of 100 either way)
        assert three.sum() > one.sum() if kind == "square" else three.sum() >= one.sum(), kind
        assert np.all(q3[~three] > q1[~three]), kind


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_restarts_start_at_half_the_radius(norm):
    """The authors' use_rand_start: x + (epsilon / 2) t / ||t||, inside the image range."""
    x = np.random.RandomState(2).uniform(-0.5, 0.5, (20, 4, 4, 1)).astype("float32")
    attacker = make_member("fab", 5, 12.0 if norm == "linf" else 60.0, norm=norm, restarts=2)

    def build():
        c = tf.constant(x)
        keys = attacker.draws.keys(c)
        return attacker.random_start(c, keys, 1), attacker.random_start(c, keys, 2)
    one, two = session_run(build)
    np.testing.assert_allclose(norm_of(one - x, norm), attacker.eps / 2, rtol=1e-5)
    assert np.abs(one - two).max() > 0                       # each restart its own draw


# ------------------------------------------------------------------------- on a trained network
FMNIST = "/usr/share/datasets/fashion-mnist"


def eval_py(*args, check=True):
    from helpers import PYTHON, REPO, run
    return run([PYTHON, REPO / "eval.py"] + [str(a) for a in args], check=check, timeout=1200)


def test_apgd_ce_is_at_least_as_strong_as_pgd_with_the_same_iterations(trained_model, tmp_path):
    common = ["--load", trained_model, "--data", FMNIST, "--limit", "300", "--quiet", "--seed", "0"]
    eval_py(*common, "--attack", "apgd-ce", "--attack-iter", "20", "--json-out", tmp_path / "a.json")
    eval_py(*common, "--attack", "pgd", "--untargeted", "--attack-iter", "20", "--json-out", tmp_path / "p.json")
    import json
    apgd = json.loads((tmp_path / "a.json").read_text())["white_box"]["apgd-ce20"]
    pgd = json.loads((tmp_path / "p.json").read_text())["white_box"]["pgd20"]
    assert 0.2 < pgd["top1_error"] < 0.95                     # the comparison has images on both sides
    assert 1 - apgd["top1_error"] <= 1 - pgd["top1_error"] + 0.01, (apgd["top1_error"], pgd["top1_error"])


def _autoattack(model, out, *extra):
    import json
    eval_py("--load", model, "--data", FMNIST, "--limit", "64", "--batch", "32", "--quiet", "--attack", "autoattack",
            "--attack-iter", "0,10", "--square-queries", "60", "--json-out", out / "aa.json", "--per-image",
            out / "aa.npz", *extra)
    return json.loads((out / "aa.json").read_text())["white_box"], np.load(out / "aa.npz")


@pytest.mark.once
def test_autoattack_reports_its_members_and_is_below_each_of_them(trained_model, tmp_path):
    """The standard ensemble in order, each member on what the earlier ones left; per image,
    an image AutoAttack leaves correct is left correct by every member run alone (same
    per-image draws), so its accuracy is at most every member's."""
    import json
    res, per_image = _autoattack(trained_model, tmp_path)
    row = res["autoattack"]
    assert list(row["members"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    n, clean_wrong = row["num_images"], round(res["clean"]["top1_error"] * 64)
    robust = round(row["robust_accuracy"] * n)
    assert n == 64 and sum(m["removed"] for m in row["members"].values()) == n - clean_wrong - robust
    assert row["members"]["apgd-ce"]["attacked"] == n - clean_wrong
    code = per_image["member/autoattack"]
    final_wrong = per_image["top1_error/autoattack"].astype(bool)
    np.testing.assert_array_equal(code == -1, ~final_wrong)
    np.testing.assert_array_equal(code == 0, per_image["top1_error/clean"].astype(bool))
    for k, name in enumerate(row["members"], 1):
        assert np.sum(code == k) == row["members"][name]["removed"]
    for name, iters in (("apgd-ce", 10), ("apgd-t", 10), ("fab-t", 10), ("square", 60)):
        eval_py("--load", trained_model, "--data", FMNIST, "--limit", "64", "--batch", "32", "--quiet", "--attack",
                name, "--attack-iter", iters, "--per-image", tmp_path / (name + ".npz"), "--json-out",
                tmp_path / (name + ".json"))
        alone = np.load(tmp_path / (name + ".npz"))["top1_error/%s%d" % (name, iters)].astype(bool)
        assert not np.any(~final_wrong & alone), name            # AutoAttack left correct what the member broke
        acc = 1 - json.loads((tmp_path / (name + ".json")).read_text())["white_box"]["%s%d" % (name, iters)][
            "top1_error"]
        assert row["robust_accuracy"] <= acc + 1e-9, name
    assert row["robust_accuracy"] < 1 - res["clean"]["top1_error"]   # it broke something


@pytest.mark.once
@pytest.mark.slow
@pytest.mark.horovod
def test_autoattack_under_two_ranks_equals_one_process(trained_model, tmp_path):
    from helpers import REPO, horovodrun
    one, per_one = _autoattack(trained_model, tmp_path)
    out = tmp_path / "two"
    out.mkdir()
    horovodrun(2, [REPO / "eval.py", "--load", trained_model, "--data", FMNIST, "--limit", "64", "--batch", "16",
                   "--quiet", "--attack", "autoattack", "--attack-iter", "0,10", "--square-queries", "60",
                   "--json-out", out / "aa.json", "--per-image", out / "aa.npz"], timeout=1200)
    import json
    two = json.loads((out / "aa.json").read_text())["white_box"]
    per_two = np.load(out / "aa.npz")
    assert two["autoattack"]["robust_accuracy"] == one["autoattack"]["robust_accuracy"]
    for name in one["autoattack"]["members"]:
        assert two["autoattack"]["members"][name]["removed"] == one["autoattack"]["members"][name]["removed"]
    np.testing.assert_array_equal(per_two["member/autoattack"], per_one["member/autoattack"])
    assert json.loads((out / "aa.json").read_text())["workers"] == 2


@pytest.mark.once
def test_audit_runs_every_check_and_writes_its_verdicts(trained_model, tmp_path):
    """Every check, with transfer sets given both ways --save-adversarial writes them (a
    directory of PNGs and an .npz), which hold the same images and so score the same."""
    import json
    for target in ("sets", "sets.npz"):
        eval_py("--load", trained_model, "--data", FMNIST, "--limit", "48", "--batch", "48", "--quiet", "--attack",
                "fgsm", "--untargeted", "--attack-iter", "1", "--save-adversarial", tmp_path / target)
    out = eval_py("--load", trained_model, "--data", FMNIST, "--limit", "48", "--batch", "48", "--quiet", "--audit",
                  "--audit-iter", "10", "--audit-queries", "40", "--json-out", tmp_path / "audit.json",
                  "--audit-transfer", tmp_path / "sets" / "fgsm1", tmp_path / "sets.npz")
    audit = json.loads((tmp_path / "audit.json").read_text())["audit"]
    transfer = audit["checks"]["black_box"]["accuracy"]
    assert set(transfer) == {"square", "transfer:fgsm1", "transfer:sets.npz/fgsm1"}, transfer
    assert transfer["transfer:fgsm1"] == transfer["transfer:sets.npz/fgsm1"] < 1.0
    assert set(audit["checks"]) == {"epsilon_sweep", "iterations_and_restarts", "black_box", "gradients",
                                    "determinism", "bpda"}
    for check in audit["checks"].values():
        # the printed verdict says what the JSON's pass/fail says
        assert check["verdict"].split(":")[0] == {True: "PASS", False: "FAIL", None: "n/a"}[check["passed"]]
        assert check["verdict"] in out.stdout
    sweep = audit["checks"]["epsilon_sweep"]
    assert sweep["passed"] and sweep["accuracy"][-1] <= 0.02 and sweep["epsilons"][-1] == 255.0
    assert audit["checks"]["determinism"]["passed"]
    assert audit["checks"]["iterations_and_restarts"]["restart_regressions"] == 0
    assert audit["checks"]["bpda"]["passed"] is None                 # the tiny preset's net has no denoising op


@pytest.mark.parametrize("flags, words", [
    (["--norm", "l2"], "--norm l2 needs --attack-epsilon"),
    (["--attack", "autoattack", "--square-queries", "0"], "--square-queries"),
    (["--attack", "autoattack", "--attack-iter", "0,10,100"], "one iteration count"),
    (["--attack-epsilon", "inf"], "finite"),
    (["--attack", "square", "--attack-step-size", "2"], "drop --attack-step-size"),
    (["--norm", "l1"], "--norm"),
])
def test_bad_attack_flags_get_one_line_and_exit_2(trained_model, flags, words):
    out = eval_py("--load", trained_model, "--data", FMNIST, "--limit", "8", "--quiet", *flags, check=False)
    assert out.returncode == 2, out.stdout[-2000:]
    errors = [line for line in out.stdout.splitlines() if "error" in line]
    assert len(errors) == 1 and words in errors[0], out.stdout[-2000:]
