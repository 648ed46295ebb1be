"""The reproduction suite on a tiny budget: every job type runs, the page and
figures are written, a second invocation skips what is finished, and the verdict logic
says what the numbers say."""
import json
import math
import os

import numpy as np
import pytest

from experiments import report
from experiments.suite import BUDGETS, VARIANTS, select_variants
from helpers import PYTHON, run

FASHION = "/usr/share/datasets/fashion-mnist"


def test_suite_covers_the_papers_rows():
    names = {v.name for v in VARIANTS}
    # Fig. 7, Table 1, Sec. 6.2 and Table 3.
    assert {"baseline", "bottleneck", "null", "mean", "median", "bilateral", "nonlocal-dot", "nonlocal",
            "nonlocal-no1x1", "nonlocal-noresidual", "deep-nonlocal", "deep-nonlocal-all",
            "clean-baseline", "clean-nonlocal"} <= names
    full = BUDGETS["full"]
    assert len(full.seeds) >= 2 and len(full.transfer_attacks()) == 5
    assert dict(full.white_box)[10] is None and max(i for i, _ in full.white_box) >= 1000


def test_unknown_variant_is_named():
    try:
        select_variants(["baseline", "nonsense"])
    except ValueError as e:
        assert "nonsense" in str(e) and "baseline" in str(e)
    else:
        raise AssertionError("an unknown variant was accepted")


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_full_budget_training_checkpoints_on_the_same_schedule(tmp_path):
    """The published suite trains in 4 "epochs" of 100 steps so that a killed run resumes
    from a checkpoint; the learning rate at every step is the one of a single 400-step
    epoch with the drop at 75% (the recipe every finished model used)."""
    from experiments.runner import Layout, plan_jobs
    from training.schedule import LRSchedule
    budget = BUDGETS["full"]
    train = next(j for j in plan_jobs(VARIANTS[:1], budget, Layout(str(tmp_path)), "data")
                 if j.name.startswith("train/"))
    epochs, per_epoch = int(_flag(train.argv, "--epochs")), int(_flag(train.argv, "--steps-per-epoch"))
    decay = float(_flag(train.argv, "--lr-decay-epochs"))
    assert epochs == budget.checkpoints > 1 and epochs * per_epoch == budget.steps
    cut = LRSchedule(budget.batch, budget.base_lr, warmup_epochs=0.0, decay_epochs=(decay,))
    whole = LRSchedule(budget.batch, budget.base_lr, warmup_epochs=0.0, decay_epochs=(budget.lr_decay_at,))
    lrs = [cut(step / per_epoch) for step in range(budget.steps)]
    assert lrs == [whole(step / budget.steps) for step in range(budget.steps)]
    assert abs(lrs[0] - 10 * lrs[-1]) < 1e-12 and lrs[0] > lrs[-1]


def test_feature_figures_run_as_soon_as_their_models_exist(tmp_path):
    """The feature figures need only the first seed's Fig. 7 and Table 3 models: a suite
    stopped later (in the costly S26 models, or in seed 2) must already have them."""
    from experiments.runner import Layout, plan_jobs
    budget = BUDGETS["full"]
    assert len(budget.seeds) >= 2
    jobs = plan_jobs(VARIANTS, budget, Layout(str(tmp_path)), "data")
    names = [j.name for j in jobs]
    at = names.index("features")
    assert names.count("features") == 1
    needed = set(jobs[at].needs)
    assert needed and all(any(j.done_file == path for j in jobs[:at]) for path in needed)
    seed1 = "/seed%d" % budget.seeds[0]
    # Right after the last needed variant's own jobs, before the costly S26 models (Sec. 6.2).
    trained_before = {n.split("/")[1] for n in names[:at] if n.startswith("train/")}
    assert {v.name for v in VARIANTS if {"fig7", "table3"} & set(v.groups)} <= trained_before
    assert not trained_before & {v.name for v in VARIANTS if "all" in v.groups}
    assert seed1 in names[at - 1]


def _row(name, accs, n=1000, metric="pgd10"):
    v = next(v for v in VARIANTS if v.name == name)
    r = report.Row(v)
    for seed, a in enumerate(accs, 1):
        r.add(metric, seed, a, n)
    return r


def test_models_compared_on_the_same_images_are_paired_when_both_kept_them(tmp_path):
    """Two models on the same 100 images: one gets 6 more right and none fewer. Unpaired,
    6 points is within two binomials' noise (threshold ~11.6); paired, only the 6 images
    differ (threshold ~5.0), in both seeds. The run-to-run spread is 0 here (equal seeds)."""
    from evaluation.records import PerImageRecorder
    rows = {"nonlocal": _row("nonlocal", [0.80, 0.80], n=100, metric="pgd1000"),
            "baseline": _row("baseline", [0.74, 0.74], n=100, metric="pgd1000")}
    assert report.compare(rows, "nonlocal", "baseline", "pgd1000")[1] == "not significant"
    for name, right in (("nonlocal", 80), ("baseline", 74)):
        for seed in (1, 2):
            path = str(tmp_path / ("%s-%d.npz" % (name, seed)))
            rec = PerImageRecorder(path, ["pgd1000"])
            wrong = (np.arange(100) >= right).astype("float32")
            rec.add_batch(np.arange(100) % 10, {"pgd1000": [wrong, wrong, wrong, 0 * wrong]})
            rec.close()
            rows[name].add("pgd1000", seed, right / 100.0, 100, (path, "pgd1000"))
    d, verdict = report.compare(rows, "nonlocal", "baseline", "pgd1000")
    assert d == pytest.approx(6.0) and verdict == "yes"
    p_b, p_c = 6.5 / 101, 0.5 / 101
    assert report.seed_differences(rows, "nonlocal", "baseline", "pgd1000")[1][1] == \
        pytest.approx(math.sqrt((p_b + p_c - (p_b - p_c) ** 2) / 100))


def test_compare_needs_significance_and_agreeing_seeds():
    rows = {"a": _row("nonlocal", [0.60, 0.62]), "b": _row("baseline", [0.50, 0.51])}
    d, verdict = report.compare(rows, "a", "b", "pgd10")
    assert abs(d - 10.5) < 1e-9 and verdict == "yes"
    rows = {"a": _row("nonlocal", [0.50, 0.52]), "b": _row("baseline", [0.51, 0.505])}
    assert report.compare(rows, "a", "b", "pgd10")[1] == "not significant"
    # A large mean difference with seeds disagreeing in sign is not a finding.
    rows = {"a": _row("nonlocal", [0.90, 0.40]), "b": _row("baseline", [0.50, 0.50])}
    assert report.compare(rows, "a", "b", "pgd10")[1] == "not significant"
    rows = {"a": _row("nonlocal", [0.40, 0.41]), "b": _row("baseline", [0.50, 0.51])}
    assert report.compare(rows, "a", "b", "pgd10")[1].startswith("no")
    assert report.compare(rows, "a", "missing", "pgd10") == (None, "not measured yet")
    # One training run is no evidence, however many images: no verdict before 2 seeds.
    rows = {"a": _row("nonlocal", [0.90]), "b": _row("baseline", [0.50])}
    assert report.compare(rows, "a", "b", "pgd10")[1].startswith("1 seed so far")
    # Nor with a lower bar: the spread between training runs is not measured yet.
    assert report.compare(rows, "a", "b", "pgd10", min_seeds=1)[1].startswith("not judged yet")
    # Only the seeds both variants have are compared.
    rows = {"a": _row("nonlocal", [0.60, 0.99]), "b": _row("baseline", [0.50])}
    d, verdict = report.compare(rows, "a", "b", "pgd10")
    assert abs(d - 10.0) < 1e-9 and verdict.startswith("1 seed so far")
    # The images count once, not once per seed, and the runs' own spread adds to the error:
    # +4.5 is not significant here (it was when the two seeds' images were pooled).
    rows = {"a": _row("nonlocal", [0.53, 0.56]), "b": _row("baseline", [0.50, 0.50])}
    assert report.compare(rows, "a", "b", "pgd10")[1] == "not significant"
    assert report.points(rows, "a", "b", "pgd10") == \
        "+4.5 points (per seed +3.0, +6.0; significant beyond ±5.3)"
    # Training noise measured on another Fig. 7 model (20 points between its seeds) makes a
    # 10-point difference between two runs each insignificant.
    rows = {"a": _row("nonlocal", [0.60, 0.62]), "b": _row("baseline", [0.50, 0.51]),
            "c": _row("mean", [0.40, 0.60])}
    assert report.compare(rows, "a", "b", "pgd10")[1] == "not significant"
    var, dof = report.run_variance(rows, "pgd10")
    assert dof == 3 and abs(var - (2 * 0.01 ** 2 + 2 * 0.005 ** 2 + 2 * 0.1 ** 2) / 3) < 1e-12


def test_interval_counts_the_shared_test_images_once():
    """Every seed is scored on the same images: two seeds are not twice the images."""
    one, two = _row("baseline", [0.8], n=1000), _row("baseline", [0.8, 0.8], n=1000)
    assert abs(one.stats("pgd10")[1] - two.stats("pgd10")[1]) < 1e-12
    z, n, p = 1.96, 1000, 0.8      # Wilson's lower end is the farther one above 50%
    lower = (p + z * z / (2 * n) - z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    assert abs(one.stats("pgd10")[1] - (p - lower)) < 1e-12
    # At 0% the interval does not collapse to 0 (it did with the Wald formula): 0 of 100 is
    # 0.0 ± 3.7, the upper end of the Wilson interval [0, 3.7%].
    assert abs(_row("clean-baseline", [0.0], n=100).stats("pgd10")[1] - 3.8416 / 103.8416) < 1e-9
    assert report.pct(_row("clean-baseline", [0.0], n=100).stats("pgd10")) == "0.0 ± 3.7"


def test_shorter_attacks_rerun_on_every_subset_of_a_longer_one(tmp_path):
    """PGD-100 runs on the first 500 images, PGD-1000 on the first 100: clean and PGD-10 (and
    PGD-100) are rerun on the same images, for adversarially trained models only."""
    from experiments.runner import Layout, matched_groups, plan_jobs
    budget = BUDGETS["full"]
    assert matched_groups(budget) == [(500, [0, 10]), (100, [0, 10, 100])]
    jobs = plan_jobs(select_variants(["baseline", "clean-baseline"]), budget, Layout(str(tmp_path)), "data")
    files = {os.path.basename(j.done_file) for j in jobs if "/baseline/seed1/" in j.done_file}
    assert {"white-box-0-10-nall.json", "white-box-100-n500.json", "white-box-1000-n100.json",
            "white-box-0-10-n500.json", "white-box-0-10-100-n100.json"} <= files
    clean = {os.path.basename(j.done_file) for j in jobs if "/clean-baseline/seed1/" in j.done_file}
    assert clean == {"model-final.npz", "white-box-0-10-nall.json", "black-box.json"}
    job = next(j for j in jobs if j.done_file.endswith("baseline/seed1/white-box-0-10-100-n100.json"))
    assert _flag(job.argv, "--attack-iter") == "0,10,100" and _flag(job.argv, "--limit") == "100"


def _curve_row(name, seeds):
    """Row with, per seed, {metric key: accuracy}: n = 10000 for plain keys, else the subset's."""
    r = report.Row(_variant(name))
    for seed, accs in seeds.items():
        for key, acc in accs.items():
            n = 10000 if key in ("clean", "pgd10") else 500 if key == "pgd100" or key.endswith("n500") else 100
            r.add(key, seed, acc, n)
    return r


def test_mcnemar_exact_test():
    """Against values worked by hand (binom.test in R gives the same): b=7, c=2 has
    p = 2 * (C(9,7) + C(9,8) + C(9,9)) / 2^9 = 92/512; only discordant images count."""
    def pair(b, c, both=0, neither=0):
        x = np.array([1] * b + [0] * c + [1] * both + [0] * neither, bool)
        y = np.array([0] * b + [1] * c + [1] * both + [0] * neither, bool)
        return report.mcnemar(x, y)
    assert pair(7, 2) == (7, 2, pytest.approx(92 / 512))
    assert pair(7, 2, both=400, neither=91)[2] == pytest.approx(92 / 512)
    assert pair(2, 7)[2] == pytest.approx(92 / 512)
    assert pair(10, 0)[2] == pytest.approx(2 / 1024)
    assert pair(5, 5)[2] == 1.0 and pair(0, 0)[2] == 1.0


def test_attack_strength_is_paired_when_the_evaluations_kept_every_image(tmp_path):
    """Fig. 6 with per-image results: PGD-10 -> PGD-100 loses 3 points on 500 images
    (82 -> 79), within the unpaired noise of two rates (about 5 points); but if the longer
    attack breaks 15 images the shorter one did not, and never the reverse, McNemar's test
    finds it (p = 2^-14). Without the per-image files the same rates stay undecided."""
    from evaluation.records import PerImageRecorder
    budget = BUDGETS["full"]
    accs = {"clean": 0.85, "pgd10": 0.80, "pgd100": 0.79, "pgd1000": 0.70,
            "clean@n100": 0.85, "pgd10@n100": 0.80, "pgd100@n100": 0.79,
            "clean@n500": 0.86, "pgd10@n500": 0.82}
    plain = {1: accs, 2: accs}
    assert report._attack_strength_claim(_curve_row("baseline", plain), budget)[3].startswith("undecided")

    def correct(n, right, first_wrong=0):
        c = np.zeros(n, bool)
        c[first_wrong:first_wrong + right] = True
        return c
    row, mixed = _curve_row("baseline", plain), []
    for seed in (1, 2):
        # first 500: PGD-10 right on images 0..409, PGD-100 on 15..409 (the same images, fewer)
        # first 100: PGD-10 right on 0..79, PGD-100 on 1..79, PGD-1000 on 10..79
        files = {("pgd10@n500", 500): correct(500, 410), ("pgd100", 500): correct(500, 395, 15),
                 ("pgd10@n100", 100): correct(100, 80), ("pgd100@n100", 100): correct(100, 79, 1),
                 ("pgd1000", 100): correct(100, 70, 10)}
        for (key, n), right in files.items():
            path = str(tmp_path / ("%s-%d.npz" % (key, seed)))
            rec = PerImageRecorder(path, ["a"])
            wrong = (~right).astype("float32")
            rec.add_batch(np.zeros(n), {"a": [wrong, wrong, wrong, 0 * wrong]})
            rec.close()
            assert row.correct(key, seed) is None
            row.add(key, seed, right.mean(), n, (path, "a"))
            np.testing.assert_array_equal(row.correct(key, seed), right)
            if seed == 1:
                mixed.append((key, right.mean(), n, path))
    verdict = report._attack_strength_claim(row, budget)[3]
    assert verdict == "yes: falls in all 2 seeds (paired per image)", verdict
    # per-image results in seed 1 only: the verdict says which seed used which test
    partly = _curve_row("baseline", plain)
    for key, acc, n, path in mixed:
        partly.add(key, 1, acc, n, (path, "a"))
    verdict = report._attack_strength_claim(partly, budget)[3]
    assert verdict == ("undecided: the fall is within the noise of these images in 1 of 2 seeds "
                       "(seed 1: paired per image; seed 2: rates compared, unpaired)"), verdict
    # and names the steps that fell back to the rates within one seed
    partly = _curve_row("baseline", plain)
    for key, acc, n, path in mixed:
        if n == 100:
            partly.add(key, 1, acc, n, (path, "a"))
    verdict = report._attack_strength_claim(partly, budget)[3]
    assert verdict.endswith("(seed 1: paired per image, except rates compared for PGD-10 vs PGD-100 on "
                            "the first 500 images; seed 2: rates compared, unpaired)"), verdict
    # the whole-set estimate's drops are paired too: 15 of 500 and 9 of 100 images lost (and
    # none gained), each proportion with half an image added

    def paired(k, n):
        p_b, p_c = (k + 0.5) / (n + 1), 0.5 / (n + 1)
        return (p_b + p_c - (p_b - p_c) ** 2) / n
    assert report._drop_variance(row, "pgd100@n100", "pgd100@n100", 1) == pytest.approx(paired(0, 100))
    assert paired(0, 100) > 0
    est, half = report.full_set_estimate(row, budget, 1000)
    assert est == pytest.approx(0.80 - (0.82 - 0.79) - (0.79 - 0.70))
    assert half == pytest.approx(1.96 * math.sqrt(0.8 * 0.2 / 10000 + paired(15, 500) + paired(9, 100)))
    # a per-image file that does not add up to its JSON's accuracy (stale) is not paired
    stale = _curve_row("baseline", plain)
    stale.add("pgd10@n500", 1, 0.82, 500, (str(tmp_path / "pgd10@n500-1.npz"), "a"))
    stale.add("pgd100", 1, 0.75, 500, (str(tmp_path / "pgd100-1.npz"), "a"))      # the file says 0.79
    assert stale.correct("pgd10@n500", 1) is not None and stale.correct("pgd100", 1) is None
    assert stale.paired("pgd10@n500", "pgd100", 1) is None
    # the page says which evaluations kept per-image results (here all but the plain rates)
    note = report.per_image_note({"baseline": row})
    assert "clean n=10000 in seed 1: every model; PGD-10 n=10000 in seed 1: every model; clean n=500 in seed 1" \
        in note, note
    assert "PGD-100 n=500 in seed 1" not in note
    assert report.per_image_note({}) == ""
    # an attack that gets weaker on the same images, in one seed: a significant rise
    rec = PerImageRecorder(str(tmp_path / "up.npz"), ["a"])
    rec.add_batch(np.zeros(100), {"a": [(~correct(100, 95)).astype("float32")] * 3 + [np.zeros(100)]})
    rec.close()
    row.add("pgd1000", 2, 0.95, 100, (str(tmp_path / "up.npz"), "a"))
    assert report._attack_strength_claim(row, budget)[3].startswith("no: rises at some step in 1 of 2 seeds")


def test_attack_strength_is_judged_on_the_same_images():
    """Fig. 6: a subset easier than the whole test set must not make PGD-100 look weaker than
    PGD-10 (the first 100 images here are 10 points easier)."""
    budget = BUDGETS["full"]
    falling = {"clean": 0.85, "pgd10": 0.75, "pgd100": 0.80, "pgd1000": 0.62,
               "clean@n100": 0.95, "pgd10@n100": 0.85, "pgd100@n100": 0.80,
               "clean@n500": 0.90, "pgd10@n500": 0.83}
    claim = report._attack_strength_claim(_curve_row("baseline", {1: falling, 2: falling}), budget)
    assert claim[3] == "yes: falls in all 2 seeds (rates compared, unpaired)", claim
    assert "first 100 images: clean 95.0, PGD-10 85.0, PGD-100 80.0, PGD-1000 62.0" in claim[2]
    flat = dict(falling, **{"pgd100@n100": 0.84, "pgd1000": 0.83})
    # Within the noise of 100 (and 500) images: too few to tell, which is not a contradiction.
    undecided = report._attack_strength_claim(_curve_row("baseline", {1: falling, 2: flat}), budget)[3]
    assert undecided.startswith("undecided") and report.verdict_class(undecided) == "within noise"
    rising = dict(falling, **{"pgd1000": 0.99})
    assert report._attack_strength_claim(_curve_row("baseline", {1: falling, 2: rising}), budget)[3] \
        .startswith("no: rises")
    assert report._attack_strength_claim(_curve_row("baseline", {1: falling}), budget)[3].startswith("1 seed")
    no_rerun = {k: v for k, v in falling.items() if "@" not in k}
    assert report._attack_strength_claim(_curve_row("baseline", {1: no_rerun, 2: no_rerun}), budget)[3] == \
        "not measured yet"
    # The curves chain the drops: PGD-10 on all images, minus PGD-10 -> PGD-100 on the first
    # 500, minus PGD-100 -> PGD-1000 on the first 100.
    est, half = report.full_set_estimate(_curve_row("baseline", {1: falling}), budget, 1000)
    assert abs(est - (0.75 - (0.83 - 0.80) - (0.80 - 0.62))) < 1e-12
    var = (0.75 * 0.25 / 10000 + 0.83 * 0.17 / 500 + 0.80 * 0.20 / 500 +
           0.80 * 0.20 / 100 + 0.62 * 0.38 / 100)
    assert abs(half - 1.96 * var ** 0.5) < 1e-12
    # A seed without the reruns on the subsets does not enter the estimate (not even its start).
    partial = {"clean": 0.5, "pgd10": 0.45, "pgd100": 0.40, "pgd1000": 0.30}
    assert abs(report.full_set_estimate(_curve_row("baseline", {1: falling, 2: partial}), budget, 1000)[0]
               - est) < 1e-12
    two = report.full_set_estimate(_curve_row("baseline", {1: falling, 2: falling}), budget, 1000)
    assert abs(two[0] - est) < 1e-12 and abs(two[1] - half) < 1e-12     # the same images: no shrinking
    assert report.full_set_estimate(_curve_row("baseline", {1: falling}), budget, 10)[0] == 0.75


def test_black_box_local_filters_verdict():
    """Table 2's text: the local filters are "not convincingly better" than null."""
    budget = BUDGETS["full"]

    def verdict(mean_accs):
        rows = {"null": _row("null", [0.30, 0.30], n=2000, metric="all_or_nothing")}
        for op in ("median", "bilateral"):
            rows[op] = _row(op, [0.31, 0.29], n=2000, metric="all_or_nothing")
        if mean_accs:
            rows["mean"] = _row("mean", mean_accs, n=2000, metric="all_or_nothing")
        return next(c for c in report.claims(rows, budget) if "local filters" in c[0])[3]

    assert verdict([0.31, 0.30]) == "yes: none significantly better"
    assert verdict([0.40, 0.41]) == "no: mean significantly better"
    assert verdict(None) == "none significantly better so far (2 of 3 judged)"
    assert report.verdict_class(verdict(None)) == "open"


def test_finished_jobs_go_stale_with_their_inputs_and_diverged_models_settle(tmp_path):
    from experiments.runner import Job, diverged_file
    model = tmp_path / "models" / "m" / "seed1" / "model-final.npz"
    result = tmp_path / "eval" / "m" / "seed1" / "white-box.json"
    for f in (model, result):
        f.parent.mkdir(parents=True)
        f.write_text("x")
    os.utime(model, (1000, 1000))
    os.utime(result, (2000, 2000))
    job = Job("wb", ["true"], str(result), str(tmp_path / "log"), needs=(str(model),))
    assert job.done and job.settled
    os.utime(model, (3000, 3000))           # the model was trained again
    assert not job.done and not job.settled
    # A model that diverged settles the jobs that need it; a job over many models runs without it.
    model.unlink()
    (model.parent / "diverged.json").write_text("{}")
    assert os.path.exists(diverged_file(str(model.parent)))
    result.unlink()
    assert job.diverged and job.settled and not job.done
    other = tmp_path / "models" / "n" / "seed1" / "model-final.npz"
    many = Job("features", ["true"], str(tmp_path / "f.json"), str(tmp_path / "log"),
               needs=(str(model), str(other)), any_model=True)
    assert not many.settled and many.missing() == [str(other)]
    # A transfer source that diverged settles every black-box evaluation (its attacks never come).
    from experiments.runner import Layout, plan_jobs
    layout = Layout(str(tmp_path / "suite"))
    jobs = plan_jobs(select_variants(["baseline"]), BUDGETS["tiny"], layout, "data")
    black_box = [j for j in jobs if j.name.startswith("black-box/")]
    assert black_box and not any(j.settled for j in black_box)
    source_dir = os.path.dirname(jobs[0].done_file)
    os.makedirs(source_dir)
    with open(diverged_file(source_dir), "w") as f:
        f.write("{}")
    assert all(j.settled for j in black_box) and all(j.settled for j in jobs if j.name.startswith("craft/"))
    assert not any(j.settled for j in jobs if j.name.startswith(("white-box/", "train/baseline")))


def test_results_follow_their_inputs_content_even_in_a_copy_that_resets_file_times(tmp_path):
    """The runner records what each output was computed from: a copy without the file times
    (plain ``cp -r``) stays finished; a changed model does not."""
    import shutil
    import sys
    from experiments.runner import Job, Layout, inputs_file, run_all
    out = tmp_path / "out"
    model, result = out / "models" / "m" / "model.npz", out / "eval" / "m" / "result.json"
    model.parent.mkdir(parents=True)
    model.write_text("weights")
    write = [sys.executable, "-c", "open(%r, 'w').write('r')" % str(result)]
    job = Job("eval", write, str(result), str(out / "eval.log"), needs=(str(model),))
    status = run_all([job], Layout(str(out)), progress=lambda m: None)
    assert status["done"] == ["eval"] and os.path.exists(inputs_file(str(result)))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copy)          # file times are not kept
    copied_model, copied_result = copy / "models" / "m" / "model.npz", copy / "eval" / "m" / "result.json"
    os.utime(copied_result, (1000, 1000))                          # older than the copied model
    copied = Job("eval", write, str(copied_result), str(copy / "eval.log"), needs=(str(copied_model),))
    assert copied.done
    copied_model.write_text("retrained")
    assert not copied.done


def test_a_model_trained_in_this_run_reruns_its_old_results(tmp_path):
    """The runner decides at each job whether it is finished: results older than a model
    trained earlier in the same run are redone, not reused."""
    import sys
    from experiments.runner import Job, Layout, run_all
    model, result = tmp_path / "model.npz", tmp_path / "result.json"
    result.write_text("old")
    os.utime(result, (1000, 1000))
    write = lambda path, text: [sys.executable, "-c", "open(%r, 'w').write(%r)" % (str(path), text)]
    train = Job("train", write(model, "new model"), str(model), str(tmp_path / "train.log"))
    evaluate = Job("eval", write(result, "new"), str(result), str(tmp_path / "eval.log"), needs=(str(model),))
    assert evaluate.done and not train.done
    status = run_all([train, evaluate], Layout(str(tmp_path)), progress=lambda m: None)
    assert status["done"] == ["train", "eval"] and result.read_text() == "new"


def test_an_output_directory_keeps_one_budget(tmp_path):
    import dataclasses
    from experiments.runner import Layout, check_budget
    layout = Layout(str(tmp_path / "out"))
    assert check_budget(layout, BUDGETS["tiny"], record=False) is None
    assert not os.path.exists(layout.budget_file())
    assert check_budget(layout, BUDGETS["tiny"]) is None and os.path.exists(layout.budget_file())
    # More seeds continue the same suite; another number of steps is another suite.
    assert check_budget(layout, dataclasses.replace(BUDGETS["tiny"], seeds=(1, 2, 3))) is None
    error = check_budget(layout, dataclasses.replace(BUDGETS["tiny"], steps=6))
    assert error and "steps" in error and "--out" in error and "\n" not in error


def test_block_usage_reads_the_closing_bn_of_every_added_block(tmp_path):
    """Only the BN that closes an added block counts (the denoising block's 1x1 conv, the
    added bottleneck's conv3, the per-residual-block non-local of Sec. 6.2), in network
    order; the backbone's residual branches are averaged on their own."""
    import numpy as np
    params = {
        "group1_denoise/conv/bn/gamma": np.array([0.5, -0.5]),
        "group0_denoise/conv/bn/gamma": np.array([0.1, 0.3]),
        "group0_denoise/conv/bn/beta": np.array([9.0, 9.0]),
        "group0_denoise/embedding_theta/W": np.ones((1, 1, 2, 1)),
        "group2_denoise/conv3/bn/gamma": np.array([0.0, 0.4]),       # an added bottleneck block
        "group2_denoise/conv1/bn/gamma": np.array([7.0, 7.0]),
        "group1/block1/non_local/conv/bn/gamma": np.array([1.0, 1.0]),
        "group1/block0/non_local/conv/bn/gamma": np.array([0.0, 2.0]),
        "group0/block0/conv3/bn/gamma": np.array([0.2, -0.2]),
        "group1/block0/conv3/bn/gamma": np.array([0.6, 0.6]),
        "group1/block0/conv2/bn/gamma": np.array([5.0, 5.0]),
    }
    path = str(tmp_path / "model-final.npz")
    np.savez(path, **params)
    added, backbone = report.block_usage(path)
    assert [s for s, _ in added] == ["group0_denoise", "group1_denoise", "group1/block0/non_local",
                                     "group1/block1/non_local", "group2_denoise"]
    assert np.allclose([g for _, g in added], [0.2, 0.5, 1.0, 1.0, 0.2])
    assert abs(backbone - 0.4) < 1e-12


def test_no_residual_verdict_counts_nan_and_a_loss_that_does_not_decrease():
    """Table 1: training without the residual connection fails if the loss goes NaN or stays
    nearer the chance-level loss (ln 10 = 2.30) than the residual version's."""
    def rows(nores_losses, diverged=(), res_losses=(1.0, 1.0)):
        res, nores = report.Row(_variant("nonlocal")), report.Row(_variant("nonlocal-noresidual"))
        res.final_loss = dict(enumerate(res_losses, 1))
        nores.final_loss = dict(nores_losses)
        nores.diverged = list(diverged)
        return nores, res

    verdict = lambda *a, **k: report._residual_claim(*rows(*a, **k))[3]
    # The verdict says how it failed: the paper's NaN, or a loss that stays near chance.
    assert verdict({1: 2.2, 2: 2.1}) == \
        "yes: training failed in 2 of 2 seeds (2 without NaN but with a loss near chance)"
    assert verdict({1: 2.2}, diverged=[2]) == \
        "yes: training failed in 2 of 2 seeds (1 NaN, 1 without NaN but with a loss near chance)"
    assert verdict({}, diverged=[1, 2]) == "yes: training failed in 2 of 2 seeds (2 NaN)"
    # 1.6 is nearer 1.0 than 2.30: that seed trained.
    assert verdict({1: 2.2, 2: 1.6}) == "no: trained in 1 of 2 seeds"
    assert verdict({1: 2.2}) == "1 seed so far (a verdict needs 2)"
    assert verdict({1: 2.2, 2: 2.2}, res_losses=()) == "not measured yet"
    assert report.verdict_class(verdict({1: 2.2, 2: 2.1})) == "holds"
    assert report.verdict_class(verdict({1: 2.2, 2: 1.6})) == "does not hold"


def test_table3_verdict_waits_for_two_seeds():
    """One seed of a clean-trained pair gives no verdict either way (it once said "no")."""
    budget = BUDGETS["full"]
    rows = {"clean-baseline": _row("clean-baseline", [0.90], n=10000, metric="clean"),
            "clean-nonlocal": _row("clean-nonlocal", [0.85], n=10000, metric="clean")}
    table3 = next(c for c in report.claims(rows, budget) if c[1] == "Table 3")
    assert report.verdict_class(table3[3]) == "open", table3
    rows = {"clean-baseline": _row("clean-baseline", [0.90, 0.91], n=10000, metric="clean"),
            "clean-nonlocal": _row("clean-nonlocal", [0.85, 0.84], n=10000, metric="clean")}
    table3 = next(c for c in report.claims(rows, budget) if c[1] == "Table 3")
    assert table3[3].startswith("not judged yet (no run-to-run spread"), table3
    # The run-to-run spread comes from the Fig. 7 models' seeds.
    rows.update({"baseline": _row("baseline", [0.80, 0.805], n=10000, metric="clean"),
                 "null": _row("null", [0.81, 0.805], n=10000, metric="clean")})
    table3 = next(c for c in report.claims(rows, budget) if c[1] == "Table 3")
    assert table3[3] == "no: significant difference"
    rows["clean-nonlocal"] = _row("clean-nonlocal", [0.905, 0.90], n=10000, metric="clean")
    table3 = next(c for c in report.claims(rows, budget) if c[1] == "Table 3")
    assert table3[3] == "yes (no significant difference)"


def _variant(name):
    return next(v for v in VARIANTS if v.name == name)


def test_plain_summary_sorts_every_verdict():
    cases = {"yes": "holds", "yes: falls in all 2 seeds": "holds", "similar (difference not "
             "significant)": "holds", "no, the opposite (significant)": "does not hold",
             "not significant": "within noise", "no: rises at some step in 1 of 2 seeds": "does not hold",
             "undecided: the fall is within the noise of these images in 2 of 2 seeds": "within noise",
             "3 of 3 significantly better": "holds", "2 of 3 significantly better": "within noise",
             "2 of 3 significantly better, 1 significantly worse (median)": "does not hold",
             "2 of 3 significantly better (mean, bilateral)": "within noise",
             "2 of 3 significantly better (mean, bilateral), 1 significantly worse (median)": "does not hold",
             "3 of 3 significantly better (mean, median, bilateral)": "holds",
             "1 of 1 significantly better (1 of 5 ops judged so far)": "open",
             "0 of 1 significantly better (1 of 5 ops judged so far)": "within noise",
             "0 of 1 significantly better, 1 significantly worse (mean) (1 of 5 ops judged so far)":
                 "does not hold",
             "not measured yet": "open", "1 seed so far (a verdict needs 2)": "open",
             "not judged yet (too few seeds)": "open",
             "not judged yet (no run-to-run spread measured: no Fig. 7 model has 2 seeds)": "open"}
    for verdict, expected in cases.items():
        assert report.verdict_class(verdict) == expected, verdict
    text = report.summary([("c1", "Fig. 7", "", "yes"), ("c2", "Table 1", "", "not measured yet")])
    assert "**Hold here** (1 of 2):\n- c1 (Fig. 7): yes" in text
    assert "**Contradicted here (the opposite is significant)** (0 of 2):\n- none" in text
    assert "- c2 (Table 1): not measured yet" in text


def test_tiny_suite_runs_resumes_and_writes_the_page(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    argv = [PYTHON, "-m", "experiments", "--budget", "tiny", "--out", str(out), "--docs", str(docs),
            "--data", FASHION, "--variants", "baseline,clean-baseline,nonlocal"]
    first = run(argv, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "0 of 19 jobs already finished" in first.stdout
    page = (docs / "RESULTS.md").read_text()
    assert "**Complete:** all 19 jobs finished" in page
    assert "each image's target and start drawn from the seed and the image" in page
    for fig in ("robustness.png", "feature_maps.png", "denoising_op.png", "feature_noise.png"):
        assert (docs / "figures" / fig).stat().st_size > 5000, fig
    # Table 3's clean-trained model is evaluated clean (and PGD-2), like the others.
    assert (out / "eval" / "clean-baseline" / "seed1" / "white-box-0-2-n32.json").exists()
    # Every job wrote its result: white-box, black-box (2 transfer attacks), features.
    wb = json.loads((out / "eval" / "baseline" / "seed1" / "white-box-0-2-n32.json").read_text())["white_box"]
    assert wb["clean"]["num_images"] == 32 and wb["pgd2"]["num_images"] == 32
    # PGD-3 runs on the first 16 images, and the shorter attacks again on those 16.
    rerun = json.loads((out / "eval" / "baseline" / "seed1" / "white-box-0-2-n16.json").read_text())["white_box"]
    assert rerun["clean"]["num_images"] == 16 and rerun["pgd2"]["num_images"] == 16
    # every white-box evaluation kept its images' results, which Fig. 6's test pairs
    from evaluation.records import load_per_image
    labels, per_image = load_per_image(str(out / "eval" / "baseline" / "seed1" / "white-box-0-2-n16.per-image.npz"))
    assert len(labels) == 16 and per_image[("top1_error", "pgd2")].mean() == pytest.approx(rerun["pgd2"]["top1_error"])
    assert "| baseline | " in page.split("### Longer attacks on the same images")[1].split("##")[0]
    bb = json.loads((out / "eval" / "nonlocal" / "seed1" / "black-box.json").read_text())["all_or_nothing"]
    assert len(bb["per_attacker_accuracy"]) == 2 and bb["num_images"] == 32
    assert bb["all_or_nothing_accuracy"] <= min(bb["per_attacker_accuracy"].values()) + 1e-9
    # the black-box evaluation kept every image's outcome too, so Table 2's claims pair models
    from evaluation.blackbox import ALL_OR_NOTHING
    assert report.ALL_OR_NOTHING == ALL_OR_NOTHING
    rows = report.collect(str(out), BUDGETS["tiny"], select_variants(["baseline", "nonlocal"]))
    labels, correct = rows["nonlocal"].per_image_correct("all_or_nothing", 1)
    assert len(labels) == 32 and correct.mean() == pytest.approx(bb["all_or_nothing_accuracy"])
    assert rows["baseline"].paired("all_or_nothing", "all_or_nothing", 1) is not None
    crafted = sorted(os.listdir(out / "transfer" / "pgd10-targeted" / "pgd10"))
    assert len(crafted) == 32 and crafted[0] == "000000.png"
    noise = json.loads((out / "features" / "features.json").read_text())["relative_perturbation"]
    assert set(noise) == {"baseline", "clean-baseline", "nonlocal"}
    assert "res3/denoise/denoised" in noise["nonlocal"] and "res3/denoise/denoised" not in noise["baseline"]
    # Started again: nothing reruns, the page is regenerated, and links an earlier run's page.
    (docs / "archive").mkdir()
    (docs / "archive" / "RESULTS-first-run.md").write_text("# an earlier run\n")
    second = run(argv, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "19 of 19 jobs already finished; 0 to run" in second.stdout
    machines = json.loads((out / "machines.json").read_text())
    assert set(machines) == set(json.loads((out / "timings.json").read_text())) and len(machines) == 19
    assert "on %s;" % next(iter(machines.values())) in page
    assert "kept for comparison: [RESULTS-first-run](archive/RESULTS-first-run.md)." in \
        (docs / "RESULTS.md").read_text()
    assert "(1/" not in second.stdout
    # An older runner's results without per-image files get them by rerunning the evaluation,
    # kept only where the rerun reproduces the recorded numbers.
    from evaluation.records import load_per_image
    wb_dir = out / "eval" / "baseline" / "seed1"
    kept, changed = wb_dir / "white-box-0-2-n16.per-image.npz", wb_dir / "white-box-3-n16.per-image.npz"
    before = load_per_image(str(kept))
    kept.unlink()
    changed.unlink()
    doc = json.loads((wb_dir / "white-box-3-n16.json").read_text())
    doc["white_box"]["pgd3"]["top1_error"] += 1.0 / 16            # as if another evaluation was recorded
    (wb_dir / "white-box-3-n16.json").write_text(json.dumps(doc))
    fill = run(argv + ["--backfill-per-image", "white-box/nonlocal/*"], timeout=300)
    assert "backfill: 0 finished white-box evaluation(s) without per-image results" in fill.stdout, fill.stdout
    fill = run(argv + ["--backfill-per-image"], timeout=300)
    assert "backfill: 2 finished white-box evaluation(s) without per-image results" in fill.stdout, fill.stdout
    assert "backfill: 1 kept, 1 differed, 0 failed" in fill.stdout, fill.stdout
    after = load_per_image(str(kept))
    np.testing.assert_array_equal(after[0], before[0])
    assert all(np.array_equal(after[1][k], before[1][k]) for k in before[1])
    assert not changed.exists() and not list(wb_dir.glob("*backfill*"))
    assert json.loads((wb_dir / "white-box-3-n16.json").read_text()) == doc      # never touched
    # Another budget into the same directory is refused (its results would be mixed in).
    other = run([PYTHON, "-m", "experiments", "--budget", "full", "--out", str(out), "--docs", str(docs),
                 "--report-only"], timeout=300, check=False)
    assert other.returncode == 2 and "holds results of another budget" in other.stdout, other.stdout
    # The block-usage table reads the trained nonlocal model's 4 blocks, not the baseline's.
    usage = [line for line in page.splitlines() if line.startswith("| nonlocal |") and line.count("/") == 3]
    assert len(usage) == 1 and not any(line.startswith("| baseline |") and " / " in line for line in page.splitlines())


def test_the_page_says_how_the_evaluations_drew_targets_and_starts(tmp_path):
    def result(model, attack):
        path = tmp_path / "eval" / model / "seed1" / "white-box-0-10-nall.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"white_box": {"clean": {"attack": "clean"}, "pgd10": {"attack": attack}}}))
    assert report.draws_note(str(tmp_path)) == ""
    result("a", "pgd(eps=25.5, step=2.55, iter=10, targeted, loss=xent)")
    assert "drawn per batch" in report.draws_note(str(tmp_path))
    result("b", "pgd(eps=25.5, step=2.55, iter=10, targeted, loss=xent, per-image seed=0)")
    note = report.draws_note(str(tmp_path))
    assert "some evaluations drew targets and starts per batch, newer ones per image" in note
    result("a", "pgd(eps=25.5, step=2.55, iter=10, targeted, loss=xent, per-image seed=0)")
    assert "independent of the batch" in report.draws_note(str(tmp_path))


def test_cost_section_compares_the_run_with_its_targets():
    timings = {"train/a/seed1": 300.0, "train/b/seed1": 1800.0, "train/c/seed2": 601.0, "white-box/a/seed1/x": 7200.0}
    text = report._targets(timings)
    assert "Finished jobs: 2.8 hours" in text      # 9901 s
    assert "Training runs over 10 minutes: 2 of 3 (b/seed1 30 min 00 s, c/seed2 10 min 01 s)." in text
    assert "over 10 minutes: 0 of 1." in report._targets({"train/a/seed1": 60.0})


def test_cost_table_counts_the_backfill_in_its_own_row(tmp_path):
    """The table's rows add up to the hours the targets line states: reruns of
    `--backfill-per-image` ("backfill/<job>") get a row of their own, not a model's."""
    from experiments.runner import Layout
    budget = BUDGETS["tiny"]
    timings = {"train/baseline/seed%d" % s: 100.0 for s in budget.seeds}
    timings.update({"white-box/baseline/seed1/x": 50.0, "backfill/white-box/baseline/seed1/x": 40.0})
    with open(Layout(str(tmp_path)).timings(), "w") as f:
        json.dump(timings, f)
    table = report.cost_table(str(tmp_path), budget, select_variants(["baseline"]))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["baseline"][1] == "50" and rows["baseline"][3] == "%d" % (100 * len(budget.seeds) + 50), rows
    assert rows["per-image backfill (older evaluations rerun)"] == ["–", "40", "–", "40"], rows
    assert sum(float(r[3]) for r in rows.values() if r[3] != "–" and r[3].replace(".", "").isdigit()) == \
        sum(timings.values())


def test_longest_attack_claim_compares_nonlocal_with_baseline():
    """Sec. 6.1: the non-local model stays ahead of the baseline under the longest attack."""
    budget = BUDGETS["full"]

    def verdict(nonlocal_accs):
        rows = {"nonlocal": _row("nonlocal", nonlocal_accs, n=100, metric="pgd1000"),
                "baseline": _row("baseline", [0.60, 0.62], n=100, metric="pgd1000")}
        found = [c for c in report.claims(rows, budget) if "longest attack" in c[0]]
        assert len(found) == 1 and "PGD-1000" in found[0][0]
        return found[0][3]

    assert verdict([0.85, 0.86]) == "yes"
    assert verdict([0.62, 0.63]) == "not significant"      # 1.5 points on 100 images: noise


def test_the_page_names_the_machines_that_ran_the_jobs(tmp_path):
    """A run resumed on another machine: the page lists each machine with its jobs and hours
    (timings.json), the one that ran most first; one machine is named alone."""
    from experiments.runner import Layout, machine_label, machines_summary, write_json
    layout = Layout(str(tmp_path))
    assert machines_summary(layout) is None
    write_json(layout.timings(), {"a": 3600.0, "b": 1800.0, "c": 9000.0})
    write_json(layout.machines(), {"a": "m1", "b": "m1"})
    assert machines_summary(layout) == "m1"
    write_json(layout.machines(), {"a": "m1", "b": "m1", "c": "m2"})
    assert machines_summary(layout) == "m2 (1 job, 2.5 h), m1 (2 jobs, 1.5 h)"
    label = machine_label()
    assert label.startswith("%d-core " % os.cpu_count()) and label.endswith(", no GPU")
