"""evaluation/stats.py on synthetic data whose answer is known: the paired two-level test's
false-positive rate and power, the image level of its standard error, the bootstrap cross-check,
Holm's correction, equivalence, McNemar and Wilson."""
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from evaluation import stats
from helpers import REPO

ALPHA = 0.05


def correctness(rng, experiments, seeds, images, seed_sd, image_sd, shift=0.0):
    """Per-image correctness of two models, bool [experiments, seeds, images] each: the logit of
    P(correct) is the image's difficulty (shared by both models: the same test images) plus the
    model's own effect on that image, its seed's effect, and ``shift`` for model a only. With
    shift = 0 the two models are exchangeable, so their true accuracies are equal."""
    difficulty = rng.normal(0.5, 2.0, (experiments, 1, images))

    def model(shift):
        logit = (difficulty + shift + rng.normal(0.0, image_sd, (experiments, 1, images))
                 + rng.normal(0.0, seed_sd, (experiments, seeds, 1)))
        return rng.random((experiments, seeds, images)) < 1.0 / (1.0 + np.exp(-logit))
    return model(shift), model(0.0)


def rejection_rate(a, b):
    return float(np.mean([stats.paired_difference(a[e], b[e]).p < ALPHA for e in range(len(a))]))


def two_sided_diff(estimate, se, df=5):
    """A Difference with the given estimate and se (the rest consistent with them)."""
    t = estimate / se
    half = sps.t.ppf(0.975, df) * se
    return stats.Difference(estimate=estimate, se=se, df=df, t=t, p=2 * sps.t.sf(abs(t), df), low=estimate - half,
                            high=estimate + half, seeds=df + 1, images=1000, per_seed=(estimate,) * (df + 1))


@pytest.mark.parametrize("seeds", [3, 6])
def test_false_positive_rate_is_alpha_when_seeds_dominate(seeds):
    """2000 experiments under the null in which the seed-to-seed variation (a logit sd of 1.2 per
    model: about 12 to 14 points of accuracy difference between seeds) dominates the standard
    error (Satterthwaite's df then near seeds - 1): the test rejects at about alpha."""
    a, b = correctness(np.random.default_rng(seeds), 2000, seeds, 500, seed_sd=1.2, image_sd=0.5)
    assert 0.02 <= rejection_rate(a, b) <= 0.08


@pytest.mark.parametrize("seeds", [3, 6])
def test_false_positive_rate_is_alpha_when_per_image_flips_dominate(seeds):
    """The same null with seeds that barely differ (logit sd 0.1), so that which images each
    seed happens to get right dominates: the crossed-design variance counts those flips once,
    and the test still rejects at about alpha (neither liberal nor needlessly blind)."""
    a, b = correctness(np.random.default_rng(10 + seeds), 2000, seeds, 500, seed_sd=0.1, image_sd=0.5)
    assert 0.02 <= rejection_rate(a, b) <= 0.08


def test_a_realistic_difference_is_found_more_often_with_more_seeds():
    """A true difference of about 2 points on 2000 images, seeds that barely differ: the test
    has real power (not ~0, as a standard error counting the per-image flips twice would give),
    and more of it with 6 seeds than with 3."""
    rng = np.random.default_rng(1)
    rates = []
    for seeds in (3, 6):
        a, b = correctness(rng, 600, seeds, 2000, seed_sd=0.1, image_sd=0.5, shift=0.15)
        rates.append(rejection_rate(a, b))
    assert 0.1 < rates[0] < rates[1], rates


def test_power_is_high_for_a_large_difference_and_predicted_by_power():
    """Accuracies (as floats) a_si = c_i + effect + u_s + w_i + e_si, b the same without effect,
    every term independent normal: the per-seed differences have sd sqrt(2 su^2 + 2 se^2 / N)
    and the image level's standard error is sqrt((2 sw^2 + 2 se^2 / S) / N), both exact. A
    difference of 3.5 such standard errors is found in more than 80% of 2000 experiments, and
    ``power`` predicts the rate."""
    seeds, images, su, sw, se_, effect = 6, 500, 0.03, 0.1, 0.2, 0.07
    sd_seed = math.sqrt(2 * su ** 2 + 2 * se_ ** 2 / images)
    se_image = math.sqrt((2 * sw ** 2 + 2 * se_ ** 2 / seeds) / images)
    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, 1.0, (2000, 1, images))
    model = lambda shift: (shared + shift + rng.normal(0.0, su, (2000, seeds, 1))
                           + rng.normal(0.0, sw, (2000, 1, images)) + rng.normal(0.0, se_, (2000, seeds, images)))
    rate = rejection_rate(model(effect), model(0.0))
    assert rate > 0.8
    assert abs(stats.power(effect, sd_seed, se_image, seeds) - rate) < 0.1


def test_seeds_for_power_is_the_first_count_reaching_the_target():
    """The returned count reaches the target and one seed fewer does not; an effect the image
    level alone hides (se_image larger than the effect) is out of reach of any number of seeds."""
    n = stats.seeds_for_power(0.03, 0.03, 0.005)
    assert n is not None and n > 2
    assert stats.power(0.03, 0.03, 0.005, n) >= 0.8 > stats.power(0.03, 0.03, 0.005, n - 1)
    assert stats.seeds_for_power(0.01, 0.01, 0.02) is None
    assert stats.power(0.0, 0.03, 0.005, 5) == pytest.approx(ALPHA)


def test_noise_levels_recover_the_seed_and_image_levels():
    """Differences built as seed effect + image effect + noise, with known sizes: the per-seed
    spread and the image level's standard error come back (the image effect must not leak into
    the seed level, nor the reverse)."""
    rng = np.random.default_rng(11)
    seeds, images = 6, 4000
    seed_fx = np.array([0.02, -0.01, 0.015, -0.02, 0.0, 0.005])
    image_fx = rng.normal(0, 0.3, images)
    d = seed_fx[:, None] + image_fx[None, :] + rng.normal(0, 0.1, (seeds, images))
    sd_seed, se_image = stats.noise_levels(d, np.zeros_like(d))
    expected_sd = np.std(seed_fx + rng.normal(0, 0.1 / math.sqrt(images), seeds), ddof=1)
    assert sd_seed == pytest.approx(np.std(d.mean(axis=1), ddof=1)) and sd_seed == pytest.approx(expected_sd, rel=0.2)
    assert se_image == pytest.approx(0.3 / math.sqrt(images), rel=0.1)
    with pytest.raises(ValueError, match="2 seeds"):
        stats.noise_levels(d[:1], np.zeros_like(d[:1]))


def test_detectable_effect_is_where_power_reaches_the_target():
    effect = stats.detectable_effect(0.01, 0.003, 4)
    assert stats.power(effect, 0.01, 0.003, 4) == pytest.approx(0.8, abs=1e-3)
    assert stats.detectable_effect(0.01, 0.003, 8) < effect          # more seeds: smaller effects
    assert stats.detectable_effect(0.0, 0.0, 4) == 0.0
    assert stats.detectable_effect(2.0, 0.0, 2) == math.inf          # not even all of accuracy


def nearly_identical_seeds():
    """3 seeds of two models on 2000 images, differing by 2.0, 2.05 and 1.95 points, built from
    about 600 images on which the models disagree, the same ones for every seed."""
    a = np.zeros((3, 2000))
    b = np.zeros((3, 2000))
    for s, a_only in enumerate([320, 321, 319]):
        a[s, :a_only] = 1                  # right in a only
        b[s, 1000:1280] = 1                # right in b only
        a[s, 1500:] = b[s, 1500:] = 1      # right in both
    return a, b


def test_image_level_keeps_the_standard_error_away_from_zero():
    """Seeds that agree closely (``nearly_identical_seeds``) alone would call the difference
    certain (p < 0.001), but a different draw of 2000 test images could easily reverse it, and
    the two-level standard error says so (p > 0.05)."""
    diff = stats.paired_difference(*nearly_identical_seeds())
    assert diff.per_seed == pytest.approx((0.02, 0.0205, 0.0195))
    seed_only_se = np.std(diff.per_seed, ddof=1) / math.sqrt(3)
    assert 2 * sps.t.sf(diff.estimate / seed_only_se, 2) < 0.001
    assert diff.se > 10 * seed_only_se
    assert diff.p > 0.05
    assert diff.low < 0 < diff.high


def test_one_seed_has_only_the_image_level():
    """With one seed the seed variance cannot be estimated: df = inf and se is the image level."""
    rng = np.random.default_rng(3)
    a, b = rng.random((1, 300)) < 0.7, rng.random((1, 300)) < 0.6
    diff = stats.paired_difference(a, b)
    d = a[0].astype(float) - b[0]
    assert diff.df == math.inf and diff.seeds == 1 and diff.images == 300
    assert diff.se == pytest.approx(np.std(d, ddof=1) / math.sqrt(300))
    assert diff.high - diff.estimate == pytest.approx(stats.Z95 * diff.se)


def test_zero_standard_error():
    """Identical models: no evidence of a difference (p = 1); a always right and b always wrong:
    certain (p = 0)."""
    same = np.ones((3, 50))
    assert stats.paired_difference(same, same).p == 1.0
    diff = stats.paired_difference(same, np.zeros((3, 50)))
    assert diff.se == 0 and diff.p == 0.0 and diff.low == diff.high == 1.0


def test_bootstrap_agrees_with_the_two_level_standard_error():
    """8 seeds, 400 images with moderate seed and image effects and a small true difference: the
    two-level bootstrap's se is within 35% of the formula's, on the same estimate."""
    a, b = correctness(np.random.default_rng(5), 1, 8, 400, seed_sd=0.3, image_sd=0.5, shift=0.1)
    diff = stats.paired_difference(a[0], b[0])
    estimate, se, low, high = stats.two_level_bootstrap(a[0], b[0], reps=2000, seed=0)
    assert estimate == pytest.approx(diff.estimate)
    assert abs(se / diff.se - 1) < 0.35
    assert low < estimate < high


def test_the_two_level_variance_matches_the_bootstrap_with_many_seeds():
    """With 40 seeds the bootstrap's seed level is no longer coarse, so it checks the analytic
    variance: resampling seeds and images independently counts the seed x image interaction
    three times instead of once (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat.
    1:386-411), so its variance is paired_difference's plus 2 MS_residual / (S N), to within
    the replicates' noise. (Without that term it is 10-14% larger here, which a looser
    tolerance would have hidden.)"""
    for seed in (11, 12):
        a, b = correctness(np.random.default_rng(seed), 1, 40, 300, seed_sd=0.3, image_sd=0.6, shift=0.1)
        diff = stats.paired_difference(a[0], b[0])
        se = stats.two_level_bootstrap(a[0], b[0], reps=4000, seed=2)[1]
        d = a[0].astype(float) - b[0].astype(float)
        s_, n_ = d.shape
        residual = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
        ms_residual = np.sum(residual ** 2) / ((s_ - 1) * (n_ - 1))
        assert se / diff.se > 1.05                                   # the interaction shows
        assert abs(se / math.sqrt(diff.se ** 2 + 2 * ms_residual / (s_ * n_)) - 1) < 0.06
        sd_seed, se_image = stats.noise_levels(a[0], b[0])
        assert sd_seed / math.sqrt(40) > 0.3 * diff.se and se_image > 0.3 * diff.se      # both levels matter


def test_wilson_intervals_of_rates_never_collapse():
    """0 of 500 and 500 of 500 still have a width (the normal approximation reads +-0 there),
    and the interval's endpoints are the score interval's."""
    low, high = stats.rate_ci95(0.0, 500)
    assert low == 0.0 and high == pytest.approx(1.96 ** 2 / (500 + 1.96 ** 2), rel=1e-3)
    assert stats.rate_ci95(1.0, 500) == [pytest.approx(1 - high), 1.0]
    assert stats.format_rate(0.25, 8, complement=True) == "75.0 [40.9, 92.9]"
    assert stats.rate_ci95(0.5, 0) == [0.0, 1.0]


def test_bootstrap_resamples_the_shared_images_once_per_replicate():
    """With seeds that agree closely the image level is nearly all of the standard error, which
    the bootstrap finds only by drawing one set of images for all seeds."""
    a, b = nearly_identical_seeds()
    se = stats.two_level_bootstrap(a, b, reps=2000, seed=1)[1]
    assert abs(se / stats.paired_difference(a, b).se - 1) < 0.35


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, 0.005): sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 are
    0.02, 0.03, 0.06, 0.04, the last raised to 0.06 to keep them monotone; only 0.005 and 0.01
    are rejected at 0.05 (whereas unadjusted all four are below 0.05)."""
    adjusted, rejected = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rejected == [True, False, False, True]


def test_holm_adjusted_values_are_monotone_and_capped():
    p = np.random.default_rng(7).random(20) ** 2
    adjusted, rejected = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(np.asarray(adjusted)[order]) >= 0)
    assert np.all(np.asarray(adjusted) >= p) and max(adjusted) <= 1.0
    assert rejected == [q <= ALPHA for q in adjusted]
    assert stats.holm([]) == ([], [])


def test_equivalence_against_a_one_point_margin():
    """A difference of 0.1 point known to 0.2 is within a 1-point margin; 0 known only to 1 point
    is not shown to be; 2 points known to 0.2 is outside it."""
    equivalent, p_tost = stats.equivalence(two_sided_diff(0.001, 0.002), 0.01)
    assert equivalent and p_tost == pytest.approx(sps.t.cdf((0.001 - 0.01) / 0.002, 5))
    assert not stats.equivalence(two_sided_diff(0.0, 0.01), 0.01)[0]
    assert not stats.equivalence(two_sided_diff(0.02, 0.002), 0.01)[0]


def test_beyond_margin_and_no_better_are_the_one_sided_t_tests():
    d = two_sided_diff(0.013, 0.003)
    assert d.p < 0.01                                               # different from 0 ...
    assert stats.beyond_margin(d, 0.01) == pytest.approx(sps.t.sf(1.0, d.df))   # ... not shown beyond 1 point
    assert stats.beyond_margin(two_sided_diff(-0.03, 0.003), 0.01) == pytest.approx(sps.t.sf(20 / 3, 5))
    assert stats.beyond_margin(two_sided_diff(-0.03, 0.003), 0.01, +1) > 0.99
    assert stats.no_better(two_sided_diff(-0.02, 0.005), 0.01) == pytest.approx(sps.t.cdf(-6.0, 5))
    assert stats.no_better(two_sided_diff(0.02, 0.005), 0.01) > 0.9


@pytest.mark.parametrize("sides", [1, 2])
def test_equivalence_power_matches_a_simulation_of_the_test(sides):
    """Two equal models, many simulated runs of the seed-level t-test: the share that
    concludes equivalence (TOST, or its upper half) is what equivalence_power predicts, up to
    its known-scale approximation; and it is 0 when the noise dwarfs the margin."""
    rng = np.random.default_rng(0)
    seeds, sd, margin = 12, 0.01, 0.01
    runs = rng.normal(0.0, sd, size=(20000, seeds))
    est, se = runs.mean(1), runs.std(1, ddof=1) / math.sqrt(seeds)
    crit = sps.t.ppf(1 - ALPHA, seeds - 1)
    upper = est + crit * se < margin
    concluded = upper & (est - crit * se > -margin) if sides == 2 else upper
    predicted = stats.equivalence_power(margin, sd, 0.0, seeds, ALPHA, sides=sides)
    assert 0.3 < predicted < 0.99
    assert concluded.mean() == pytest.approx(predicted, abs=0.06)
    # (one-sided, the test's own level near the margin bounds it from below)
    assert stats.equivalence_power(margin, 0.05, 0.02, 4, ALPHA, sides=sides) < (0.01 if sides == 2 else 0.1)


def test_mcnemar_against_the_binomial_test():
    """7 images right in x only, 2 in y only, 40 in both, 11 in neither: the exact two-sided
    binomial test of 7 of 9; concordant images do not count."""
    x = np.array([1] * 7 + [0] * 2 + [1] * 40 + [0] * 11, bool)
    y = np.array([0] * 7 + [1] * 2 + [1] * 40 + [0] * 11, bool)
    p, x_only, y_only = stats.mcnemar(x, y)
    assert (x_only, y_only) == (7, 2)
    assert p == pytest.approx(sps.binomtest(7, 9, 0.5).pvalue) and p == pytest.approx(92 / 512)
    assert stats.mcnemar(y.astype(int), x.astype(int)) == (pytest.approx(p), 2, 7)
    assert stats.mcnemar(x, x) == (1.0, 0, 0)


def test_wilson_interval_by_hand():
    """k = 0 of 10: (0, z^2 / (10 + z^2)) = (0, 0.2775); k = 5 of 10: 0.5 -+ z sqrt(2.5 + z^2/4)
    / (10 + z^2) = (0.2366, 0.7634); n = 0: (0, 1)."""
    assert stats.wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-5))
    assert stats.wilson_interval(5, 10) == (pytest.approx(0.23659, abs=1e-5), pytest.approx(0.76341, abs=1e-5))
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_difference(np.ones((3, 10)), np.ones((3, 11)))
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_difference(np.ones(10), np.ones(10))
    with pytest.raises(ValueError, match="2 images"):
        stats.paired_difference(np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="one shape"):
        stats.two_level_bootstrap(np.ones((2, 10)), np.ones((3, 10)))
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar(np.ones(5, bool), np.ones(6, bool))
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar(np.full(5, 0.5), np.ones(5))
    with pytest.raises(ValueError, match="margin"):
        stats.equivalence(two_sided_diff(0.0, 0.01), 0.0)


def test_imports_without_tensorflow():
    """The report generator loads this module without TensorFlow: loaded by itself, it must not
    import it."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('s', 'evaluation/stats.py'); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), stdout=subprocess.PIPE, text=True, check=True)
    assert out.stdout.strip() == "False"
