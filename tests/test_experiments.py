"""The reproduction suite (issue 7) on a tiny budget: every job type runs, the page and
figures are written, a second invocation skips what is finished, and the verdict logic
says what the numbers say."""
import json
import os

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
    from fdenoise.schedule import LRSchedule
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
    assert report.compare(rows, "a", "b", "pgd10", min_seeds=1)[1] == "yes"
    # Only the seeds both variants have are compared.
    rows = {"a": _row("nonlocal", [0.60, 0.99]), "b": _row("baseline", [0.50])}
    d, verdict = report.compare(rows, "a", "b", "pgd10")
    assert abs(d - 10.0) < 1e-9 and verdict.startswith("1 seed so far")


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
    budget = BUDGETS["full"]

    def rows(nores_losses, diverged=(), res_losses=(1.0, 1.0)):
        res, nores = report.Row(_variant("nonlocal")), report.Row(_variant("nonlocal-noresidual"))
        res.final_loss = dict(enumerate(res_losses, 1))
        nores.final_loss = dict(nores_losses)
        nores.diverged = list(diverged)
        return nores, res

    verdict = lambda *a, **k: report._residual_claim(*rows(*a, **k), budget)[3]
    assert verdict({1: 2.2, 2: 2.1}) == "yes: training failed in 2 of 2 seeds"
    assert verdict({1: 2.2}, diverged=[2]) == "yes: training failed in 2 of 2 seeds"
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
    assert table3[3] == "no: significant difference"
    rows["clean-nonlocal"] = _row("clean-nonlocal", [0.905, 0.90], n=10000, metric="clean")
    table3 = next(c for c in report.claims(rows, budget) if c[1] == "Table 3")
    assert table3[3] == "yes (no significant difference)"


def _variant(name):
    return next(v for v in VARIANTS if v.name == name)


def test_plain_summary_sorts_every_verdict():
    cases = {"yes": "holds", "yes (direction only: nested subsets)": "holds", "similar (difference not "
             "significant)": "holds", "no, the opposite (significant)": "does not hold",
             "not significant": "does not hold", "no: not falling at every step": "does not hold",
             "3 of 3 significantly better": "holds", "2 of 3 significantly better": "does not hold",
             "1 of 1 significantly better (1 of 5 ops judged so far)": "open",
             "0 of 1 significantly better (1 of 5 ops judged so far)": "does not hold",
             "not measured yet": "open", "1 seed so far (a verdict needs 2)": "open",
             "not judged yet (too few seeds)": "open"}
    for verdict, expected in cases.items():
        assert report.verdict_class(verdict) == expected, verdict
    text = report.summary([("c1", "Fig. 7", "", "yes"), ("c2", "Table 1", "", "not measured yet")])
    assert "**Hold here** (1 of 2):\n- c1 (Fig. 7): yes" in text
    assert "**Do not hold here** (0 of 2):\n- none" in text and "- c2 (Table 1): not measured yet" in text


def test_tiny_suite_runs_resumes_and_writes_the_page(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    argv = [PYTHON, "-m", "experiments", "--budget", "tiny", "--out", str(out), "--docs", str(docs),
            "--data", FASHION, "--variants", "baseline,clean-baseline,nonlocal"]
    first = run(argv, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "0 of 13 jobs already finished" in first.stdout
    page = (docs / "RESULTS.md").read_text()
    assert "**Complete:** all 13 jobs finished" in page
    for fig in ("robustness.png", "feature_maps.png", "denoising_op.png", "feature_noise.png"):
        assert (docs / "figures" / fig).stat().st_size > 5000, fig
    # Table 3's clean-trained model is evaluated clean (and PGD-2), like the others.
    assert (out / "eval" / "clean-baseline" / "seed1" / "white-box-0-2-n32.json").exists()
    # Every job wrote its result: white-box, black-box (2 transfer attacks), features.
    wb = json.loads((out / "eval" / "baseline" / "seed1" / "white-box-0-2-n32.json").read_text())["white_box"]
    assert wb["clean"]["num_images"] == 32 and wb["pgd2"]["num_images"] == 32
    bb = json.loads((out / "eval" / "nonlocal" / "seed1" / "black-box.json").read_text())["all_or_nothing"]
    assert len(bb["per_attacker_accuracy"]) == 2 and bb["num_images"] == 32
    assert bb["all_or_nothing_accuracy"] <= min(bb["per_attacker_accuracy"].values()) + 1e-9
    crafted = sorted(os.listdir(out / "transfer" / "pgd10-targeted" / "pgd10"))
    assert len(crafted) == 32 and crafted[0] == "000000.png"
    noise = json.loads((out / "features" / "features.json").read_text())["relative_perturbation"]
    assert set(noise) == {"baseline", "clean-baseline", "nonlocal"}
    assert "res3/denoise/denoised" in noise["nonlocal"] and "res3/denoise/denoised" not in noise["baseline"]
    # Started again: nothing reruns, the page is regenerated.
    second = run(argv, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "13 of 13 jobs already finished; 0 to run" in second.stdout
    assert "(1/" not in second.stdout
    # The block-usage table reads the trained nonlocal model's 4 blocks, not the baseline's.
    usage = [l for l in page.splitlines() if l.startswith("| nonlocal |") and l.count("/") == 3]
    assert len(usage) == 1 and not any(l.startswith("| baseline |") and " / " in l for l in page.splitlines())
