"""The reproduction suite: what it plans (schedule on held-out images, sources that share no
row's recipe, the budget rule), how its claims are judged (on synthetic rows whose answer is
known), and a tiny run end to end that resumes and writes the page."""
import json
import os
import types

import numpy as np
import pytest

from experiments import claims, schedule
from experiments.runner import (Job, Layout, compact_log, decide_row, plan_jobs, run_all, run_job, trained_file,
                                write_json)
from experiments.suite import AUDIT_TRANSFER, BUDGETS, SOURCES, TRANSFER, VARIANTS, select_variants
from helpers import PYTHON, run

FASHION = "/usr/share/datasets/fashion-mnist"


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_suite_covers_the_papers_rows_and_its_sources_share_no_rows_recipe():
    names = [v.name for v in VARIANTS]
    assert set(names) == {"baseline", "bottleneck", "null", "mean", "median", "bilateral", "nonlocal-dot",
                          "nonlocal", "nonlocal-no1x1", "nonlocal-noresidual", "deep-nonlocal", "deep-nonlocal-all",
                          "clean-baseline", "clean-nonlocal"}
    assert names[0] == "baseline"             # the budget rule projects every row from the first
    rows = {(tuple(v.arch_flags), v.clean_training) for v in VARIANTS}
    assert len(SOURCES) >= 2 and len({s.clean_training for s in SOURCES}) == 2
    for s in SOURCES:
        assert "--width" in s.arch_flags and (tuple(s.arch_flags), s.clean_training) not in rows
        assert not any("--width" in v.arch_flags for v in VARIANTS)
        assert s.seed not in BUDGETS["full"].seeds
    full = BUDGETS["full"]
    assert len(full.seeds) >= 3 and full.test_images is None and full.validation > 0
    assert all(a.epsilon_factor == 2 for a in TRANSFER) and AUDIT_TRANSFER.epsilon_factor == 1
    with pytest.raises(ValueError, match="nonsense.*valid: baseline"):
        select_variants(["baseline", "nonsense"])


def test_schedule_rule_takes_the_fewest_epochs_within_a_point_of_the_best():
    assert schedule.choose({1: 0.50, 2: 0.555, 3: 0.56, 4: 0.558}) == 2       # 0.5 below the best: enough
    assert schedule.choose({1: 0.50, 2: 0.54, 3: 0.56}) == 3
    assert schedule.choose({1: 0.56, 2: 0.56}) == 1                           # a tie goes to fewer epochs
    assert schedule.choose({1: 0.40, 2: 0.45}) == 2
    with pytest.raises(ValueError):
        schedule.choose({})


def test_the_schedule_is_decided_once_every_candidate_has_its_validation_result(tmp_path):
    budget = BUDGETS["full"]
    layout = Layout(str(tmp_path))
    for e, acc in zip(budget.candidates[:-1], (0.40, 0.478, 0.485)):
        write_json(layout.schedule_eval_file(e), {"white_box": {"clean": {"top1_error": 0.2},
                                                                "pgd10": {"top1_error": 1 - acc}}})
    first = schedule.decide(layout, budget)
    assert first["epochs"] is None and first["missing"] == [budget.candidates[-1]]
    jobs, _ = plan_jobs(VARIANTS, budget, layout, FASHION)
    assert all(j.name.startswith("schedule/") for j in jobs)         # nothing else before the choice
    write_json(layout.schedule_eval_file(budget.candidates[-1]),
               {"white_box": {"clean": {"top1_error": 0.2}, "pgd10": {"top1_error": 1 - 0.48}}})
    chosen = schedule.decide(layout, budget)
    assert chosen["epochs"] == 2 and not chosen["at_longest"] and chosen["curve"][4] == pytest.approx(0.48)
    # recorded: a later change of a candidate's result does not move the choice
    write_json(layout.schedule_eval_file(1), {"white_box": {"clean": {"top1_error": 0.2},
                                                            "pgd10": {"top1_error": 0.0}}})
    assert schedule.decide(layout, budget)["epochs"] == 2


def test_planned_commands_hold_out_validation_and_use_each_attacks_epsilon(tmp_path):
    budget = BUDGETS["full"]
    layout = Layout(str(tmp_path))
    write_json(layout.schedule_file(), {"epochs": 3, "curve": {"3": 0.5}, "clean": {"3": 0.8}})
    jobs, sched = plan_jobs(select_variants(["baseline", "clean-baseline"]), budget, layout, FASHION)
    assert sched["epochs"] == 3
    by = {j.name: j for j in jobs}
    train = by["train/baseline/seed1"]
    assert _flag(train.argv, "--validation") == "5000" and _flag(train.argv, "--epochs") == "3"
    assert _flag(train.argv, "--lr-decay-epochs") == "2.25" and _flag(train.argv, "--preset") == "repro"
    assert "--attack-iter" not in train.argv and _flag(by["train/clean-baseline/seed1"].argv, "--attack-iter") == "0"
    for s in budget.seeds:
        assert "targeted/baseline/seed%d" % s in by and "black-box/baseline/seed%d" % s in by
    assert "--untargeted" not in by["targeted/baseline/seed1"].argv
    untargeted = by["untargeted/baseline/seed1"].argv
    assert "--untargeted" in untargeted and "--limit" not in untargeted
    assert _flag(by["long/baseline/seed1"].argv, "--limit") == "1000"
    # AutoAttack and the audit: the first seed only, and not for clean-trained rows
    assert {n for n in by if n.startswith(("autoattack/", "audit/"))} == {"autoattack/baseline/seed1",
                                                                         "audit/baseline/seed1"}
    assert not any(n.startswith(("long/clean", "black-box/clean")) for n in by)
    eps = budget.epsilon
    for s in SOURCES:
        craft = by["craft/%s/pgd10" % s.name]
        assert float(_flag(craft.argv, "--attack-epsilon")) == 2 * eps
        assert _flag(craft.argv, "--save-adversarial").endswith(".npz")
        assert float(_flag(by["craft/%s/pgd10-eps" % s.name].argv, "--attack-epsilon")) == eps
        assert _flag(by["source/%s" % s.name].argv, "--epochs") == "3"
    bb = by["black-box/baseline/seed1"].argv
    sets = bb[bb.index("--all-or-nothing") + 1:bb.index("--json-out")]
    assert len(sets) == len(SOURCES) * len(TRANSFER) and not any("pgd10-eps" in p for p in sets)
    audit = by["audit/baseline/seed1"].argv
    assert [p for p in audit if p.endswith("pgd10-eps.npz")] == [layout.transfer_file(s, AUDIT_TRANSFER)
                                                                 for s in SOURCES]


def test_budget_rule_cuts_rows_before_seeds_and_keeps_its_decisions(tmp_path):
    """The first row always runs; a later one is cut if time spent plus its projection (the
    first row's measured time times its relative cost) passes the budget, and the decision
    stands when the suite resumes."""
    import dataclasses
    budget = dataclasses.replace(BUDGETS["full"], hours=1.0)
    layout = Layout(str(tmp_path))
    variants = select_variants(["baseline", "nonlocal", "null", "clean-baseline"])
    jobs = [types.SimpleNamespace(name="train/baseline/seed%d" % s, row="baseline") for s in budget.seeds]
    write_json(layout.timings(), {"schedule/e1": 300.0, **{j.name: 500.0 for j in jobs}})   # 2300 s spent
    assert decide_row("baseline", jobs, layout, budget, variants) == ("kept", None)
    decision, why = decide_row("nonlocal", jobs, layout, budget, variants)           # 2000 s x 6.6
    assert decision == "cut" and "past the 1-hour budget" in why
    assert decide_row("null", jobs, layout, budget, variants)[0] == "cut"             # 2300 + 2800 > 3600
    assert decide_row("clean-baseline", jobs, layout, budget, variants)[0] == "kept"  # 2300 + 800
    write_json(layout.timings(), {})
    assert decide_row("nonlocal", jobs, layout, budget, variants)[0] == "cut"          # recorded
    assert json.loads(open(layout.rows_file()).read())["kept"] == ["baseline", "clean-baseline"]


def test_a_training_whose_model_is_not_kept_stays_done_while_its_readers_are(tmp_path):
    model = tmp_path / "m" / "model-final.npz"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    train = Job("train", [], str(model), str(tmp_path / "log"), trains=True)
    reader = Job("eval", [], str(tmp_path / "r.json"), str(tmp_path / "log"), needs=(str(model),))
    train.readers.append(reader)
    (tmp_path / "r.json").write_text("{}")
    reader.record_inputs()
    write_json(trained_file(str(model)), {"model_sha1": "x"})
    assert train.done and reader.done
    model.unlink()                                       # not committed (a later seed's model)
    assert train.done and reader.done
    (tmp_path / "r.json").unlink()                       # a reader left to run: the model is needed again
    assert not train.done and not reader.done
    model.write_bytes(b"other weights")                  # trained again
    (tmp_path / "r.json").write_text("{}")
    assert not reader.done                               # computed from the old model: stale


def test_the_figures_are_committed_once_a_row_settles_not_after_every_job(tmp_path):
    from experiments.__main__ import paths_to_commit
    out, docs = str(tmp_path / "out"), str(tmp_path / "docs")
    a = Job("targeted/mean/seed1", [], str(tmp_path / "a.json"), str(tmp_path / "log"), row="mean")
    b = Job("untargeted/mean/seed1", [], str(tmp_path / "b.json"), str(tmp_path / "log"), row="mean")
    other = Job("targeted/null/seed1", [], str(tmp_path / "c.json"), str(tmp_path / "log"), row="null")
    source = Job("source/s", [], str(tmp_path / "d.json"), str(tmp_path / "log"))
    figures = os.path.join(docs, "figures")
    (tmp_path / "a.json").write_text("{}")
    taken = paths_to_commit(a, [a, b, other, source], out, docs)
    assert out in taken and os.path.join(docs, "RESULTS.md") in taken and figures not in taken
    (tmp_path / "b.json").write_text("{}")                 # the row's last job: the figure goes along
    assert figures in paths_to_commit(b, [a, b, other, source], out, docs)
    assert figures in paths_to_commit(source, [a, b, other, source], out, docs)   # no row


def test_a_failed_job_is_tried_again_and_a_training_stopped_before_its_first_checkpoint_restarts(tmp_path):
    """A transient failure is tried once more in the same invocation; train.py's refusal of
    a directory holding a run with no checkpoint is answered with --restart; a finished
    training without its marker (killed between the export and the marker) gets one."""
    layout = Layout(str(tmp_path / "out"))
    count = tmp_path / "count"
    flaky_out, train_out = tmp_path / "flaky.json", tmp_path / "t" / "model-final.npz"
    flaky = Job("flaky", [PYTHON, "-c", (
        "import os, sys; n = int(open(%r).read()) if os.path.exists(%r) else 0; open(%r, 'w').write(str(n + 1)); "
        "sys.exit(1) if n == 0 else open(%r, 'w').write('{}')") % (str(count), str(count), str(count),
                                                                    str(flaky_out))],
        str(flaky_out), str(tmp_path / "flaky.log"))
    train = Job("train", [PYTHON, "-c", (
        "import os, sys\nif '--restart' not in sys.argv:\n    print('train.py: error: ... pass --restart to train "
        "again'); sys.exit(2)\nos.makedirs(%r, exist_ok=True); open(%r, 'w').write('w')") % (
            str(train_out.parent), str(train_out))], str(train_out), str(tmp_path / "train.log"), trains=True)
    kept = tmp_path / "k" / "model-final.npz"
    kept.parent.mkdir()
    kept.write_bytes(b"weights")
    finished = Job("finished", [PYTHON, "-c", "import sys; sys.exit(1)"], str(kept), str(tmp_path / "k.log"),
                   trains=True)
    budget = types.SimpleNamespace(hours=1.0)
    status = run_all(lambda: ([flaky, train, finished], {"epochs": 1, "curve": {}}), layout, budget, [],
                     progress=lambda line: None)
    assert sorted(status["done"]) == ["flaky", "train"] and status["failed"] == [], status
    assert count.read_text() == "2"                               # failed once, then done
    assert "--restart" in (tmp_path / "train.log").read_text()
    assert json.load(open(trained_file(str(train_out))))["model_sha1"]
    assert json.load(open(trained_file(str(kept))))["seconds"] is None      # marked, never run
    always = Job("always", [PYTHON, "-c", "import sys; sys.exit(1)"], str(tmp_path / "never.json"),
                 str(tmp_path / "always.log"))
    status = run_all(lambda: ([always], {"epochs": 1, "curve": {}}), layout, budget, [], progress=lambda line: None)
    assert status["failed"] == ["always"]
    assert (tmp_path / "always.log").read_text().count("$ ") == 2         # twice, then left to the next run


# ------------------------------------------------------------------------------- the verdicts
def _rows(spec, n=2000, seeds=4, seed=0, metric="pgd10", seed_sd=0.02):
    """Synthetic rows: {name: accuracy} -> rows whose per-seed, per-image correctness has that
    accuracy, a seed effect (``seed_sd`` in the latent scale: 0.02 is about a point) and the
    images shared by all (image difficulty)."""
    from experiments.results import Row
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n)
    rows = {}
    for k, (name, acc) in enumerate(spec.items()):
        row = Row(select_variants([name])[0])
        for s in range(1, seeds + 1):
            shift = rng.normal(scale=seed_sd)
            from scipy.stats import norm
            threshold = norm.ppf(acc + rng.normal(scale=seed_sd / 4))
            correct = difficulty + shift + rng.normal(scale=0.3, size=n) < threshold
            row.correct.setdefault(metric, {})[s] = correct
        rows[name] = row
    return rows


def _judge(rows, which):
    found = [j for j in claims.judge(rows, claims=[c for c in claims.CLAIMS if c.key in which])]
    return {j.claim.key: j for j in found}


def test_a_large_effect_holds_and_a_reversed_one_is_contradicted():
    rows = _rows({"nonlocal": 0.60, "nonlocal-dot": 0.50})
    j = _judge(rows, {"gaussian>dot"})["gaussian>dot"]
    assert j.verdict == "holds" and j.diffs[0][2].estimate == pytest.approx(0.10, abs=0.02)
    assert 0 < j.detectable < 0.05 and j.power is None              # the paper gives no effect size
    sized = claims.Claim("sized", "a beats b", "-", "greater", "pgd10", (("nonlocal", "nonlocal-dot"),), paper_effect=5)
    assert claims.judge(rows, claims=[sized])[0].power > 0.5
    rows = _rows({"nonlocal": 0.50, "nonlocal-dot": 0.60})
    assert _judge(rows, {"gaussian>dot"})["gaussian>dot"].verdict == "contradicted"


def test_no_difference_is_not_shown_and_similar_needs_the_equivalence_test():
    rows = _rows({"nonlocal": 0.55, "nonlocal-dot": 0.55}, seed=1)
    assert _judge(rows, {"gaussian>dot"})["gaussian>dot"].verdict == "not shown"
    # the same rows under a "similar" claim: equivalent within 1 point on 20,000 images x 4 seeds
    similar = claims.Claim("sim", "similar", "-", "similar", "pgd10", (("nonlocal", "nonlocal-dot"),))
    found = claims.judge(_rows({"nonlocal": 0.55, "nonlocal-dot": 0.55}, n=20000, seed=2, seed_sd=0.002),
                         claims=[similar])
    assert found[0].verdict == "holds", found[0].diffs
    # 200 images: the interval is far wider than the margin: not shown (never "similar" by default)
    found = claims.judge(_rows({"nonlocal": 0.55, "nonlocal-dot": 0.55}, n=200, seed=3), claims=[similar])
    assert found[0].verdict == "not shown"
    # 5 points apart: contradicted
    found = claims.judge(_rows({"nonlocal": 0.60, "nonlocal-dot": 0.55}, seed=4), claims=[similar])
    assert found[0].verdict == "contradicted"
    # the page states the equivalence test's power: high on 20,000 images, none on 200
    assert claims.judge(_rows({"nonlocal": 0.55, "nonlocal-dot": 0.55}, n=20000, seed=2, seed_sd=0.002),
                        claims=[similar])[0].power > 0.8
    assert claims.judge(_rows({"nonlocal": 0.55, "nonlocal-dot": 0.55}, n=200, seed=3),
                        claims=[similar])[0].power < 0.05


def test_no_better_is_one_sided():
    """"Local filters are no better than null": a filter clearly worse than null does not
    contradict it (it holds), a filter clearly better does."""
    aon = "all-or-nothing"
    worse = _judge(_rows({"mean": 0.50, "median": 0.51, "bilateral": 0.50, "null": 0.56}, seed=5, metric=aon),
                   {"local~null-bb"})["local~null-bb"]
    assert worse.claim.kind == "no-better" and worse.verdict == "holds", worse.diffs
    better = _judge(_rows({"mean": 0.62, "median": 0.56, "bilateral": 0.56, "null": 0.56}, seed=6, metric=aon),
                    {"local~null-bb"})["local~null-bb"]
    assert better.verdict == "contradicted", better.diffs


def test_a_claim_about_every_op_needs_every_op():
    better = {"baseline": 0.50, "mean": 0.60, "median": 0.60, "bilateral": 0.60, "nonlocal-dot": 0.60,
              "nonlocal": 0.60}
    assert _judge(_rows(better), {"ops>baseline"})["ops>baseline"].verdict == "holds"
    one_short = dict(better, median=0.50)
    j = _judge(_rows(one_short), {"ops>baseline"})["ops>baseline"]
    assert j.verdict == "not shown" and j.p == pytest.approx(max(d.p if d.estimate > 0 else 1 for _, _, d in j.diffs))


def test_rows_cut_by_the_budget_leave_their_pairs_out_and_are_named():
    from experiments.page import claims_table, verdict_summary
    one_short = {"baseline": 0.50, "mean": 0.60, "median": 0.50, "bilateral": 0.60, "nonlocal-dot": 0.60,
                 "nonlocal": 0.60}
    rows = _rows(one_short)
    which = [c for c in claims.CLAIMS if c.key in ("ops>baseline", "gaussian>dot")]
    full = {j.claim.key: j for j in claims.judge(rows, claims=which)}
    assert full["ops>baseline"].verdict == "not shown"          # median fails the claim
    cut = {j.claim.key: j for j in claims.judge(rows, claims=which, cut={"median": "x", "bilateral": "y"})}
    j = cut["ops>baseline"]
    assert j.verdict == "holds" and j.cut_rows == ["median", "bilateral"]
    assert [a for a, _, _ in j.diffs] == ["mean", "nonlocal-dot", "nonlocal"]
    assert "without median, bilateral (cut by the budget)" in verdict_summary(list(cut.values()), ("–", "not measured"))
    assert "without median, bilateral" in claims_table(list(cut.values()), BUDGETS["full"])
    # a claim with every pair cut is not measured, and says which row
    gone = claims.judge(rows, claims=which, cut={"nonlocal-dot": "x"})
    assert gone[1].verdict == "not measured" and gone[1].why == "row nonlocal-dot cut by the budget"


def test_holm_runs_over_the_claims_measured_and_one_seed_gives_no_verdict():
    rows = _rows({"nonlocal": 0.56, "nonlocal-dot": 0.55, "baseline": 0.50, "bottleneck": 0.505}, seed=5)
    found = _judge(rows, {"gaussian>dot", "bottleneck>baseline"})
    ps = [found[k].p for k in ("gaussian>dot", "bottleneck>baseline")]
    adjusted = sorted(ps)
    assert sorted(found[k].p_holm for k in found) == pytest.approx([min(1, 2 * adjusted[0]),
                                                                  max(min(1, 2 * adjusted[0]), adjusted[1])])
    one = _rows({"nonlocal": 0.60, "nonlocal-dot": 0.50}, seeds=1)
    j = _judge(one, {"gaussian>dot"})["gaussian>dot"]
    assert j.verdict == "not measured" and "1 seed(s)" in j.why
    j = claims.judge(one, claims=[c for c in claims.CLAIMS if c.key == "gaussian>dot"], cut={"nonlocal": "x"})[0]
    assert j.why == "row nonlocal cut by the budget"


def test_the_residual_rule_counts_nan_and_a_loss_that_stays_near_chance():
    from experiments.results import Row
    ref, r = Row(select_variants(["nonlocal"])[0]), Row(select_variants(["nonlocal-noresidual"])[0])
    ref.final_loss = {1: 0.9, 2: 1.0}
    r.trained_seeds, r.diverged, r.final_loss = [2], [1], {2: 2.2}        # chance: ln 10 = 2.30
    assert claims.residual_rule({"nonlocal": ref, "nonlocal-noresidual": r})[1].startswith("holds")
    r.final_loss = {2: 1.1}
    assert claims.residual_rule({"nonlocal": ref, "nonlocal-noresidual": r})[1].startswith("not shown")
    r.diverged, r.trained_seeds, r.final_loss = [], [1, 2], {1: 1.0, 2: 1.1}
    assert claims.residual_rule({"nonlocal": ref, "nonlocal-noresidual": r})[1].startswith("contradicted")


def test_the_block_usage_table_reads_the_committed_first_seed_model_only(tmp_path):
    """A clone holds only each row's first-seed model: the table must not change with what
    other seeds' models a machine happens to keep."""
    from experiments.page import block_usage_table
    layout, budget = Layout(str(tmp_path)), BUDGETS["full"]
    for seed, gamma in ((1, 0.25), (2, 4.0)):
        os.makedirs(layout.model_dir("mean", seed))
        np.savez(layout.model_file("mean", seed), **{
            "group0_denoise/conv/bn/gamma": np.full(8, gamma), "group1_denoise/conv/bn/gamma": np.full(8, -gamma),
            "group0/block0/conv3/bn/gamma": np.full(8, 2 * gamma)})
    table = block_usage_table(layout, budget, select_variants(["baseline", "mean"]))
    assert "| mean | 0.25 / 0.25 | 0.50 |" in table and "4.00" not in table and "baseline" not in table
    os.remove(layout.model_file("mean", 1))
    assert "mean" not in block_usage_table(layout, budget, select_variants(["mean"]))


# ------------------------------------------------------------------------------ end to end
@pytest.mark.once
def test_tiny_suite_runs_resumes_and_writes_the_page(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    argv = [PYTHON, "-m", "experiments", "--budget", "tiny", "--out", str(out), "--docs", str(docs),
            "--data", FASHION, "--variants", "baseline,clean-baseline"]
    first = run(argv, timeout=1500)
    assert "schedule chosen: " in first.stdout
    page = (docs / "RESULTS.md").read_text()
    assert "**Complete:** all " in page
    for fig in ("schedule.png", "white_box.png", "feature_maps.png", "feature_noise.png"):
        assert (docs / "figures" / fig).stat().st_size > 5000, fig
    # the schedule runs trained on the held-out split and were evaluated on it, not the test set
    run_json = json.loads((out / "schedule" / "e1" / "run.json").read_text())
    assert run_json["settings"]["validation"] == BUDGETS["tiny"].validation
    val = json.loads((out / "schedule" / "e1-validation.json").read_text())
    assert val["validation"] == BUDGETS["tiny"].validation and val["white_box"]["pgd10"]["num_images"] == 64
    # every evaluation kept its images' results, and the black-box one covers both sources' sets
    from experiments.results import collect
    rows = collect(str(out), BUDGETS["tiny"], select_variants(["baseline", "clean-baseline"]))
    base = rows["baseline"]
    assert base.seeds("pgd10") == [1, 2] and base.matrix("pgd10", [1, 2]).shape == (2, 32)
    assert base.matrix("pgd10@long", [1, 2]).shape == (2, 16) and base.seeds("autoattack") == [1]
    assert {k for k in base.correct if k.startswith("aon:")} == {"aon:" + s.name for s in SOURCES}
    bb = json.loads((out / "eval" / "baseline" / "seed1" / "black-box.json").read_text())["all_or_nothing"]
    assert len(bb["per_attacker_accuracy"]) == 6 and bb["num_images"] == 32
    assert base.accuracy("all-or-nothing")[0] == pytest.approx(
        np.mean([json.loads((out / "eval" / "baseline" / ("seed%d" % s) / "black-box.json").read_text())[
            "all_or_nothing"]["all_or_nothing_accuracy"] for s in (1, 2)]))
    for s in SOURCES:
        with np.load(out / "transfer" / s.name / "pgd10.npz") as z:
            assert z["images/pgd10"].dtype == np.uint8 and z["images/pgd10"].shape == (32, 28, 28, 1)
    audit = json.loads((out / "eval" / "baseline" / "seed1" / "audit.json").read_text())["audit"]
    assert {k for k in audit["checks"]["black_box"]["accuracy"] if k.startswith("transfer:")} == {
        "transfer:%s/pgd10-eps.npz/pgd10" % s.name for s in SOURCES}
    assert "| baseline | 1 | pass" in page or "| baseline | 1 | **FAIL**" in page       # the audit's row
    # only the first seed's models are kept with the results (and the sources')
    ignored = (out / ".gitignore").read_text()
    assert "!models/*/seed1/model-final.npz" in ignored and "models/*/seed*/*" in ignored
    # Started again: nothing reruns, even with a later seed's model gone (its readers are done)
    (out / "models" / "baseline" / "seed2" / "model-final.npz").unlink()
    second = run(argv, timeout=300)
    assert "0 to run" in second.stdout and "(1/" not in second.stdout, second.stdout[-2000:]
    listed = run(argv + ["--list"], timeout=300).stdout
    assert "done     train/baseline/seed2" in listed and "todo" not in listed
    # another budget into the same directory is refused (its results would be mixed in)
    other = run([PYTHON, "-m", "experiments", "--budget", "full", "--out", str(out), "--docs", str(docs),
                 "--report-only"], timeout=300, check=False)
    assert other.returncode == 2 and "holds results of another budget" in other.stdout, other.stdout


def test_the_page_and_the_logs_show_paths_relative_to_the_repository_holding_them(tmp_path):
    """The page and the logs are committed: no machine's absolute paths on them. A job's log
    starts with its command as a reader reruns it from the root of their clone."""
    from core.files import repo_relative
    from experiments.runner import shown_command
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "results" / "repro").mkdir(parents=True)
    assert repo_relative(str(tmp_path / "repo" / "results" / "repro")) == "results/repro"
    (tmp_path / "elsewhere").mkdir()
    assert repo_relative(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    model = str(tmp_path / "repo" / "results" / "repro" / "models" / "x" / "model-final.npz")
    argv = [PYTHON, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval.py"),
            "--load", model, "--data", str(tmp_path / "elsewhere"), "--attack-iter", "0,10", "--note", "a b"]
    assert shown_command(argv) == ("python eval.py --load results/repro/models/x/model-final.npz --data %s "
                                   "--attack-iter 0,10 --note 'a b'" % (tmp_path / "elsewhere"))
    # and run_job writes it so
    layout = Layout(str(tmp_path / "repo" / "results" / "repro"))
    done = tmp_path / "repo" / "results" / "repro" / "done.json"
    job = Job("j", [PYTHON, "-c", "open(%r, 'w').write('{}')" % str(done)], str(done),
              layout.log("j"))
    assert run_job(job, layout) == "done"
    first = open(layout.log("j")).read().strip().splitlines()[0]
    assert first.startswith("$ python -c ") and PYTHON not in first, first


def test_logs_keep_what_a_terminal_shows_of_a_progress_bar(tmp_path):
    log = tmp_path / "job.log"
    log.write_bytes(b"$ train.py\n 0%|  |0/400\r 50%|# |200/400\r100%|##|400/400\nEpoch 1 done\r\nend")
    compact_log(str(log))
    assert log.read_bytes() == b"$ train.py\n100%|##|400/400\nEpoch 1 done\nend"


@pytest.mark.once
def test_projection_scales_the_baseline_row_by_each_rows_measured_step(tmp_path):
    """experiments.projection: a row's projection is the baseline row's measured time times its
    measured step over the baseline's; jobs outside the rows count as measured; the page's
    section is replaced, not repeated, when written again."""
    timings = {"train/baseline/seed1": 3600.0, "train/baseline/seed2": 1800.0, "autoattack/baseline/seed1": 1800.0,
               "train/median/seed1": 99999.0, "schedule/e1": 360.0, "craft/source-x/pgd10": 360.0}
    (tmp_path / "timings.json").write_text(json.dumps(timings))
    page = tmp_path / "PERFORMANCE.md"
    page.write_text("# Performance\n\n## Targets\n\nkept\n")
    argv = [PYTHON, "-m", "experiments.projection", "--timings", tmp_path / "timings.json", "--budget", "tiny",
            "--variants", "baseline,median", "--width", "4", "--batch", "2", "--repeats", "1",
            "--json-out", tmp_path / "p.json", "--markdown", page]
    run(argv, timeout=600)
    res = json.loads((tmp_path / "p.json").read_text())
    base, median = res["rows"]
    assert base["row"] == "baseline" and base["new_cost"] == 1.0
    assert res["baseline_row_hours"] == pytest.approx(2.0) and res["outside_rows_hours"] == pytest.approx(0.2)
    # the tiny budget has 2 seeds, as many as it measured
    assert base["projected_hours"] == pytest.approx(2.0)
    assert median["new_cost"] == pytest.approx(median["step_seconds"] / base["step_seconds"])
    assert median["projected_hours"] == pytest.approx(2.0 * median["new_cost"])
    assert median["measured_hours"] == pytest.approx(99999.0 / 3600)
    assert res["total_hours"] == pytest.approx(0.2 + 2.0 + median["projected_hours"])
    run(argv, timeout=600)
    text = page.read_text()
    assert text.count("## The reproduction suite's cost, projected") == 1 and "kept" in text
    assert "All 2 rows at 2 seeds" in text


def test_methods_plan_and_the_rule_choosing_the_non_local_nets_cheap_method(tmp_path):
    """experiments.methods: every method on the baseline net at every seed (training, PGD-100,
    AutoAttack), PGD-7 on the non-local net; its cheap method only once every cheap method's
    baseline AutoAttack results exist, by the fixed rule, recorded so that later results do not
    change it."""
    from experiments.methods import METHODS, PLANS, MethodsPlanner, best_cheap
    from experiments.runner import Layout, write_json
    assert best_cheap({"fgsm-rs": [0.4], "n-fgsm": [0.5]}, {}) is None          # free has no result yet
    assert best_cheap({"fgsm-rs": [0.4, 0.6], "n-fgsm": [0.5, 0.5], "free": [0.3, 0.2]},
                      {"fgsm-rs": [10, 10], "n-fgsm": [5, 5]}) == "n-fgsm"      # tie on accuracy: faster wins
    plan = PLANS["tiny"]
    layout = Layout(str(tmp_path))
    planner = MethodsPlanner(plan, layout, "/data", python="py")
    jobs = planner.jobs()
    seeds = len(plan.seeds)
    assert len(jobs) == (len(METHODS) + 1) * seeds * 3
    names = [j.name for j in jobs]
    assert "train/baseline/free/seed1" in names and "autoattack/nonlocal-dot/pgd7-targeted/seed2" in names
    train = next(j for j in jobs if j.name == "train/baseline/pgd7/seed1")
    assert train.argv[-4:] == ["--method", "pgd", "--attack-iter", "7", "--untargeted"][-4:]
    assert "--denoise" in next(j for j in jobs if j.name == "train/nonlocal-dot/pgd7-targeted/seed1").argv
    aa = next(j for j in jobs if j.name == "autoattack/baseline/trades/seed1")
    assert aa.needs == (layout.model_file("baseline/trades", 1),) and "--per-image" in aa.argv
    accuracy = {"fgsm-rs": 0.30, "n-fgsm": 0.35, "free": 0.33}
    for m, acc in accuracy.items():
        for seed in plan.seeds:
            write_json(layout.eval_file("baseline/" + m, seed, "autoattack"),
                       {"white_box": {"autoattack": {"robust_accuracy": acc}}})
    jobs = planner.jobs()
    assert len(jobs) == (len(METHODS) + 2) * seeds * 3
    assert "train/nonlocal-dot/n-fgsm/seed1" in [j.name for j in jobs]
    write_json(layout.eval_file("baseline/free", 1, "autoattack"),
               {"white_box": {"autoattack": {"robust_accuracy": 0.9}}})
    assert planner.choose() == "n-fgsm"          # recorded: a later result does not change it


def test_methods_page_table_claims_and_figure(tmp_path):
    """experiments.methods.report from finished jobs' files: the table's means, and the claims:
    a method as accurate as PGD-7 on every image at 5x less time reaches the goal, one that
    loses every image does not; the section replaced in the page, the figure written."""
    import numpy as np

    from core.files import write_npz
    from experiments.methods import METHODS, PLANS, SECTION, report, row_name
    from experiments.runner import Layout, write_json
    plan = PLANS["tiny"]
    layout = Layout(str(tmp_path / "out"))
    n = plan.images
    rng = np.random.RandomState(0)
    reference = (rng.rand(n) < 0.5).astype(np.uint8)          # AutoAttack top-1 error of PGD-7 per image
    errors = {"pgd7-targeted": reference, "free": reference, "fgsm-rs": np.ones(n, np.uint8)}
    seconds = {"pgd7-targeted": 600.0, "free": 120.0, "fgsm-rs": 100.0}
    timings = {}
    for m in METHODS:
        if m.name not in errors:
            continue
        for seed in plan.seeds:
            row = row_name("baseline", m.name)
            write_json(os.path.join(layout.model_dir(row, seed), "run.json"),
                       {"passes_per_step": 3, "method": {"collapses": [{"step": 5}] if m.name == "fgsm-rs" else []}})
            timings["train/%s/seed%d" % (row, seed)] = seconds[m.name]
            pgd = layout.per_image_file(layout.eval_file(row, seed, "pgd100"))
            aa = layout.per_image_file(layout.eval_file(row, seed, "autoattack"))
            os.makedirs(os.path.dirname(pgd), exist_ok=True)
            write_npz(pgd, labels=np.zeros(n, np.int32), **{"top1_error/clean": np.zeros(n, np.uint8),
                                                            "top1_error/pgd%d" % plan.long_iter: errors[m.name]})
            write_npz(aa, labels=np.zeros(n, np.int32), **{"top1_error/autoattack": errors[m.name]})
    write_json(layout.timings(), timings)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "TRAINING-METHODS.md").write_text("# Methods\n\n## %s\n\nnot yet run\n\n## After\n\nkept\n" % SECTION)
    rows, claims = report(plan, layout, str(docs))
    by = {c["method"]: c for c in claims}
    assert set(by) == {"free", "fgsm-rs"}
    assert by["free"]["not_worse"] and by["free"]["goal"] and by["free"]["time_ratio"] == pytest.approx(5.0)
    assert not by["fgsm-rs"]["not_worse"] and not by["fgsm-rs"]["goal"]
    assert by["fgsm-rs"]["difference"].estimate == pytest.approx(-(1 - reference.mean()))
    text = (docs / "TRAINING-METHODS.md").read_text()
    assert "not yet run" not in text and "kept" in text and text.count("## %s" % SECTION) == 1
    ref_acc = "%.1f" % (100 * (1 - reference.mean()))
    assert "| baseline | PGD-7, targeted (the paper's recipe) | 2 | 100.0 | %s | %s | 10.0 | 3 | no | 4 |" % (
        ref_acc, ref_acc) in text                     # 90 h x 3 / 63 passes
    assert "2 of 2 seeds" in text and "**reaches the goal**" in text
    assert (docs / "figures" / "methods-autoattack-vs-time.png").stat().st_size > 1000
