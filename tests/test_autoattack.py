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
from attacks.apgd import APGDAttacker, checkpoints
from attacks.fab import FABAttacker, project_onto_hyperplane
from attacks.losses import attack_objective
from attacks.square import SquareAttacker, p_schedule

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
def test_apgd_checkpoints_follow_the_papers_recursion():
    """p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06): w_j = ceil(p_j N)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    for n in (100, 1000):
        assert checkpoints(n) == [int(round(x * n)) for x in p[1:]], n


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
    adv, _, queries = session_run(lambda: APGDAttacker(threat, 100, "xent", draws=Draws(0, per_image=True))
                                  .attack_info(tf.constant(x), tf.constant(y), model, 2))
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


def _apgd_numpy(clean, y, start, eps, n_iter):
    """Algorithm 1 of Croce and Hein (2020), L-infinity, one image at a time."""
    out = []
    first, decrease, smallest = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    for i in range(len(clean)):
        c, label = clean[i:i + 1].astype(np.float32), y[i:i + 1]

        def proj(z):
            return np.clip(np.clip(z, c - eps, c + eps), -1, 1)
        x = start[i:i + 1].astype(np.float32)
        loss, grad, pred = _ce_and_gradient(x, label)
        best_x, best_f, best_g = x, loss[0], grad
        adv, broken = x, pred[0] != label[0]
        step, x_prev = np.float32(2 * eps), x
        window, since, rises, f_prev = first, 0, 0, loss[0]
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
            since += 1
            if since == window:
                cut = rises <= 0.75 * window or (not reduced and f_check >= best_f)
                if cut:
                    step = np.float32(step / 2)
                    x, grad = best_x, best_g
                reduced, f_check, since, rises = cut, best_f, 0, 0
                window = max(window - decrease, smallest)
        out.append(adv if broken else best_x)
    return np.concatenate(out)


def test_apgd_equals_a_numpy_implementation_of_algorithm_1():
    """The whole loop: momentum, checkpoints, halving and restarts from the best point, on a
    model whose gradient signs change (so every part of the schedule shows in the result)."""
    rng = np.random.RandomState(3)
    clean = rng.uniform(-0.5, 0.5, (24, K, 1, 1)).astype("float32")
    y = (clean.reshape(24, K) ** 2 @ QUAD).argmax(1).astype("int32")
    eps = 32 * PIXEL_SCALE
    start = np.clip(clean + rng.uniform(-eps, eps, clean.shape), -1, 1).astype("float32")
    attacker = APGDAttacker(LinfBall(32.0), 40, "xent", draws=Draws(0, per_image=True))
    ours, _ = session_run(lambda: attacker.run(tf.constant(clean), tf.constant(y), quadratic,
                                               start=tf.constant(start)))
    expected = _apgd_numpy(clean, y, start, eps, 40)
    moved = np.abs(expected - start).max()
    assert moved > eps                                         # the test sees the run
    np.testing.assert_allclose(ours, expected, atol=1e-4)


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
        assert adv.shape == x.shape and queries.max() <= 50
    with pytest.raises(AssertionError, match="gradient of the network"):
        session_run(lambda: PGDAttacker(16, 1, 2).attack(tf.constant(x), tf.constant(y), no_gradient_model, K))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_uses_exactly_its_query_budget_on_images_it_cannot_break(norm):
    """A model that always predicts class 0 by a wide margin: every image of class 0 stands,
    and each uses exactly the budget (the start counts); images of other classes start
    misclassified and stop after one query."""
    w = np.zeros((4, K), np.float32)
    bias = np.r_[50.0, np.zeros(K - 1)].astype("float32")

    def model(x):
        return tf.matmul(tf.reshape(x, [-1, 4]), w) + bias + 0.0 * tf.reduce_sum(x)
    x = np.random.RandomState(1).uniform(-0.5, 0.5, (6, 2, 2, 1)).astype("float32")
    y = np.array([0, 0, 0, 3, 3, 0], np.int32)
    adv, _, queries = session_run(lambda: SquareAttacker(make_threat(norm, 32.0), 37, draws=Draws(0, per_image=True))
                                  .attack_info(tf.constant(x), tf.constant(y), model, K))
    np.testing.assert_array_equal(queries, [37, 37, 37, 1, 1, 37])


def test_square_p_schedule_halves_at_the_papers_points():
    assert p_schedule(0, 10000) == 0.8 and p_schedule(10, 10000) == 0.8 and p_schedule(11, 10000) == 0.4
    assert p_schedule(8001, 10000) == pytest.approx(0.8 / 512)
    assert p_schedule(2501, 5000) == pytest.approx(0.8 / 128)      # rescaled to the budget: 5002 of 10,000


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


@pytest.mark.slow
@pytest.mark.horovod
def test_autoattack_under_two_ranks_equals_one_process(trained_model, tmp_path):
    from helpers import PYTHON, REPO, horovodrun
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
    assert PYTHON


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
        assert check["passed"] in (True, False, None)
        assert check["verdict"].split(":")[0] in ("PASS", "FAIL", "n/a")
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
