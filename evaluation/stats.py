"""The statistics of evaluation: a rate measured on n images, and comparisons of two models.

A claim such as "non-local denoising beats the baseline" is judged on that pair's own data:
both models trained with the same S seeds and evaluated on the same N test images, so their
per-image correctness forms two [S, N] arrays whose rows (seeds) and columns (images) pair up.
Its uncertainty has two levels, the seeds and the test images (``paired_difference``; the
tests check its interval against ``two_level_bootstrap``, which assumes no formula); no variance
is borrowed from other models. The claims of a report are corrected together (``holm``); "the
two are similar" is shown only by an equivalence test against a margin fixed in advance
(``equivalence``), never by a non-significant difference; ``power`` and ``seeds_for_power`` say
how many seeds a claim needs. ``mcnemar`` compares two evaluations of the same images, and
every proportion measured on n images (an accuracy, an error rate, an attack's success) gets
Wilson's interval (``wilson_interval``, ``rate_ci95``, ``format_rate``), which stays inside
[0, 1] and never collapses to a point at 0% or 100%, as the normal approximation's +-0 does.

Only numpy, scipy and the standard library: the report generator imports this module without
TensorFlow.
"""
import dataclasses
import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


@dataclasses.dataclass(frozen=True)
class Difference:
    """Model a minus model b, in accuracy (a fraction), with its two-level standard error:
    ``df`` the degrees of freedom of the t reference (Satterthwaite's; inf for a single seed),
    ``t``/``p`` the two-sided test of "no difference", ``low``/``high`` the confidence interval,
    ``per_seed`` the S per-seed differences it rests on."""
    estimate: float
    se: float
    df: float
    t: float
    p: float
    low: float
    high: float
    seeds: int
    images: int
    per_seed: tuple


def _paired_rows(a, b):
    """``a``, ``b`` as float arrays [S, N] of the same shape, or a one-line ValueError: the
    comparison is only meaningful when row s of both is seed s and column i the same image."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError("a and b must both be [seeds, images] arrays of one shape, got %s and %s"
                         % (a.shape, b.shape))
    if a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError("need at least 1 seed and 2 images, got %d seeds and %d images" % a.shape)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a and b must be finite (per-image correctness)")
    return a, b


def _two_sided_p(t, df):
    """Two-sided p of Student's t with ``df`` degrees of freedom (the normal for df = inf)."""
    return float(min(1.0, 2.0 * stats.t.sf(abs(t), df)))


def crossed_variance(d):
    """(variance of the grand mean, Satterthwaite degrees of freedom) of per-seed, per-image
    differences ``d`` [S, N], seeds and images crossed random factors (every seed evaluated on
    every image): d_si = mu + seed_s + image_i + seed x image_si. The grand mean's variance is
    var_seed / S + var_image / N + var_interaction / (S N), estimated without bias from the two-way
    ANOVA mean squares as (MS_seed + MS_image - MS_residual) / (S N) (Searle, Casella and
    McCulloch 1992, "Variance components", ch. 4), with Satterthwaite's (1946) approximate
    degrees of freedom: about S - 1 when training randomness dominates, many more when the test
    images do. Each term is counted once (summing var(d_s)/S and the image term would count the
    per-image flips between seeds twice). The estimate is floored at max(MS_seed, MS_image) / (S N),
    which it exceeds whenever the interaction is smaller than either main effect (as expected), so
    that sampling noise can never make it negative."""
    seeds, images = d.shape
    grand = d.mean()
    seed_means, image_means = d.mean(axis=1), d.mean(axis=0)
    if seeds == 1:
        return float(np.var(d[0], ddof=1)) / images, math.inf
    ms_seed = images * float(np.sum((seed_means - grand) ** 2)) / (seeds - 1)
    ms_image = seeds * float(np.sum((image_means - grand) ** 2)) / (images - 1)
    residual = d - seed_means[:, None] - image_means[None, :] + grand
    ms_resid = float(np.sum(residual ** 2)) / ((seeds - 1) * (images - 1))
    combined = ms_seed + ms_image - ms_resid
    floor = max(ms_seed, ms_image)
    if combined < floor:
        combined = floor
        df = float(seeds - 1) if ms_seed >= ms_image else float(images - 1)
    else:
        denominator = ms_seed ** 2 / (seeds - 1) + ms_image ** 2 / (images - 1) + \
            ms_resid ** 2 / ((seeds - 1) * (images - 1))
        df = combined ** 2 / denominator if denominator > 0 else math.inf
    return combined / (seeds * images), max(float(df), 1.0)


def paired_difference(a, b, confidence=0.95):
    """The accuracy of model a minus that of model b, from per-image correctness [S, N] of both
    on the same S seeds and N images, with a two-level standard error.

    The estimate is the mean of the per-seed differences. Its uncertainty has a seed level
    (training randomness) and a test-image level (which images happened to be in the test set,
    shared by every seed), and their interaction (an image one seed gets right and another
    wrong): ``crossed_variance`` estimates all three from this pair's own [S, N] differences,
    and the test refers to Student's t with its Satterthwaite degrees of freedom. With one seed
    only the image level can be estimated (df = inf): the seed-to-seed variance is then unknown,
    not zero, and a verdict should not rest on one seed."""
    a, b = _paired_rows(a, b)
    seeds, images = a.shape
    d = a - b
    per_seed = d.mean(axis=1)
    estimate = float(per_seed.mean())
    variance, df = crossed_variance(d)
    se = math.sqrt(max(variance, 0.0))
    if se > 0:
        t = estimate / se
        p = _two_sided_p(t, df)
    else:
        # every seed and image agree exactly: any nonzero difference is certain, zero is no evidence
        t = math.copysign(math.inf, estimate) if estimate != 0 else 0.0
        p = 0.0 if estimate != 0 else 1.0
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return Difference(estimate=estimate, se=se, df=df, t=float(t), p=p, low=estimate - half, high=estimate + half,
                      seeds=seeds, images=images, per_seed=tuple(float(x) for x in per_seed))


def two_level_bootstrap(a, b, reps=2000, seed=0, confidence=0.95):
    """A cross-check of ``paired_difference`` that assumes no formula: -> (estimate, se, low,
    high), se the standard deviation of the replicates and (low, high) their percentile
    interval. Each replicate resamples the seeds with replacement and, once, the image indices
    with replacement, applied to every seed: the test images are shared by all seeds (and both
    models), so their sampling noise is common to them and must be drawn once (the two-stage
    resampling of hierarchical data, Davison & Hinkley 1997, "Bootstrap methods and their
    application"). Resampling both factors counts the seed x image interaction three times
    (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1:386-411): its variance exceeds
    ``crossed_variance``'s by about 2 MS_residual / (S N), which the tests use to check the
    analytic variance. Not used for verdicts: with 3 to 6 seeds the seed level of a bootstrap
    is too coarse (a percentile interval ignores that the seed variance is itself estimated)."""
    a, b = _paired_rows(a, b)
    seeds, images = a.shape
    d = a - b
    rng = np.random.default_rng(seed)
    # A replicate's mean over its resampled seeds and images is w_seed' d w_image / (S N), with
    # w the multinomial counts of each seed and image: no [reps, S, N] array is formed.
    w_seed = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=reps)
    w_image = rng.multinomial(images, np.full(images, 1.0 / images), size=reps)
    replicates = np.einsum("rn,rn->r", w_seed @ d, w_image) / (seeds * images)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(d.mean()), float(np.std(replicates, ddof=1)), float(low), float(high)


def holm(pvalues, alpha=0.05):
    """Holm's step-down correction for the claims of one report (Holm 1979, "A simple
    sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70): it controls
    the chance of any false claim at ``alpha`` under any dependence between the tests (the
    comparisons share models and images). -> (adjusted p-values in the input order, rejections).
    The i-th smallest p is multiplied by (m - i + 1), made non-decreasing and capped at 1; a
    claim is rejected when its adjusted p is at most alpha."""
    p = np.asarray(pvalues, dtype=float).ravel()
    if p.size and not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p-values must lie in [0, 1], got %s" % list(pvalues))
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in adjusted], [bool(x <= alpha) for x in adjusted]


def equivalence(diff, margin, alpha=0.05):
    """Two one-sided tests (TOST; Schuirmann 1987, J. Pharmacokinet. Biopharm. 15:657-680) of
    "the difference lies within (-margin, margin)", with the se and df of ``diff``: -> (equivalent,
    p_tost). Equivalent iff both "difference <= -margin" and "difference >= margin" are rejected at
    ``alpha``, i.e. the (1 - 2 alpha) interval lies inside the margins; p_tost is the larger of
    the two one-sided p-values. This, not a non-significant difference, is what shows two models
    similar: a test without power is never significant, whatever the truth."""
    if not margin > 0:
        raise ValueError("the equivalence margin must be positive, got %r" % (margin,))
    if diff.se > 0:
        p_above_lower = float(stats.t.sf((diff.estimate + margin) / diff.se, diff.df))
    else:
        p_above_lower = 0.0 if diff.estimate > -margin else 1.0
    p_tost = max(p_above_lower, no_better(diff, margin))
    return bool(p_tost < alpha), p_tost


def beyond_margin(diff, margin, direction=0):
    """One-sided p-value of "the difference lies beyond ``margin``": of |d| > margin
    (``direction`` 0), of d > margin (+1) or of d < -margin (-1), with the se and df of
    ``diff``. What contradicts a claim of equivalence (or of "no better"): a point estimate
    beyond the margin is not enough while its interval still reaches inside."""
    if direction == 0:
        return min(beyond_margin(diff, margin, +1), beyond_margin(diff, margin, -1))
    shifted = direction * diff.estimate - margin
    if diff.se > 0:
        return float(stats.t.sf(shifted / diff.se, diff.df))
    return 0.0 if shifted > 0 else 1.0


def no_better(diff, margin):
    """One-sided p-value of "a is not better than b by ``margin`` or more" (d < margin; the
    upper half of TOST, a non-superiority test), with the se and df of ``diff``."""
    if diff.se > 0:
        return float(stats.t.cdf((diff.estimate - margin) / diff.se, diff.df))
    return 0.0 if diff.estimate < margin else 1.0


def equivalence_power(margin, sd_seed, se_image, seeds, alpha=0.05, sides=2):
    """Chance that the equivalence test concludes "within ``margin``" when the true difference
    is 0 (``sides`` 2: TOST; 1: the one-sided "no better than b by more than the margin"),
    with these noise levels and seeds. The interval must fall inside the margin(s): with scale
    s = sqrt(sd_seed^2 / seeds + se_image^2) and df = seeds - 1 (as in ``power``), TOST needs
    |d| < margin - t(1 - alpha) s, so its power is 2 F_t(margin / s - t(1 - alpha)) - 1, and the
    one-sided test F_t(margin / s - t(1 - alpha)). (It treats s as known: a slight
    overstatement at few seeds.) Near 0 says the claim cannot hold at this scale whatever the
    truth, which the page states beside a "not shown"."""
    if seeds < 2:
        raise ValueError("power needs at least 2 seeds (one seed cannot estimate the seed level)")
    scale = math.sqrt(sd_seed ** 2 / seeds + se_image ** 2)
    if scale == 0:
        return 1.0
    df = seeds - 1
    one = float(stats.t.cdf(margin / scale - stats.t.ppf(1.0 - alpha, df), df))
    return max(0.0, 2.0 * one - 1.0) if sides == 2 else one


def power(effect, sd_seed, se_image, seeds, alpha=0.05):
    """Chance that the two-sided test of ``paired_difference`` rejects at ``alpha`` when the true
    difference is ``effect``, the per-seed differences have standard deviation ``sd_seed`` and
    the image level has standard error ``se_image``: noncentral t with noncentrality effect /
    sqrt(sd_seed^2 / seeds + se_image^2) (e.g. Cohen 1988, "Statistical power analysis for the
    behavioral sciences", ch. 2) and seeds - 1 degrees of freedom. That is the test's own
    distribution when the seed level dominates; when the image level dominates, the test's
    Satterthwaite df are larger and its power a little higher than this predicts, so seeds
    planned with it are enough."""
    if seeds < 2:
        raise ValueError("power needs at least 2 seeds (one seed cannot estimate the seed level)")
    scale = math.sqrt(sd_seed ** 2 / seeds + se_image ** 2)
    if scale == 0:
        return 1.0 if effect != 0 else 0.0
    df = seeds - 1
    critical = stats.t.ppf(1.0 - alpha / 2.0, df)
    delta = effect / scale
    # scipy 1.13's boost-backed nct warns "divide by zero" at odd df although its values are
    # right, and "series did not converge" far in the tail (noncentrality in the hundreds), where
    # its closest value is the answer to the precision that matters (power within 1e-6 of 1)
    import warnings
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(stats.nct.sf(critical, df, delta) + stats.nct.cdf(-critical, df, delta))
    return min(max(value, 0.0), 1.0)


def noise_levels(a, b):
    """(sd_seed, se_image): the two inputs of ``power`` estimated from a pair's own per-image
    correctness [S, N] (S >= 2): the standard deviation of the per-seed differences (training
    randomness, with the seed-by-image flips it carries), and the standard error the test
    images' shared level adds to the mean difference, sqrt(var_image / N) with var_image
    estimated as (MS_image - MS_residual) / S (floored at 0), the ANOVA of ``crossed_variance``."""
    a, b = _paired_rows(a, b)
    d = a - b
    seeds, images = d.shape
    if seeds < 2:
        raise ValueError("noise levels need at least 2 seeds")
    seed_means, image_means, grand = d.mean(axis=1), d.mean(axis=0), d.mean()
    ms_image = seeds * float(np.sum((image_means - grand) ** 2)) / (images - 1)
    residual = d - seed_means[:, None] - image_means[None, :] + grand
    ms_resid = float(np.sum(residual ** 2)) / ((seeds - 1) * (images - 1))
    var_image = max(ms_image - ms_resid, 0.0) / seeds
    return float(np.std(seed_means, ddof=1)), math.sqrt(var_image / images)


def detectable_effect(sd_seed, se_image, seeds, alpha=0.05, target=0.8):
    """The smallest true difference the test detects with probability ``target`` (its
    ``power``) at ``alpha``, with these noise levels and seeds (bisection; 0 if there is no
    noise, inf if even a difference of 1, all of accuracy, is not)."""
    if sd_seed == 0 and se_image == 0:
        return 0.0
    low, high = 0.0, 1.0              # a difference in accuracy is at most 1
    if power(high, sd_seed, se_image, seeds, alpha) < target:
        return math.inf
    for _ in range(60):
        mid = (low + high) / 2
        if power(mid, sd_seed, se_image, seeds, alpha) >= target:
            high = mid
        else:
            low = mid
    return high


def seeds_for_power(effect, sd_seed, se_image, alpha=0.05, target=0.8, max_seeds=50):
    """The smallest number of seeds (from 2) whose ``power`` reaches ``target``, or None if even
    ``max_seeds`` does not (as when the image level alone hides the effect: more seeds cannot
    shrink it, only more test images can)."""
    for seeds in range(2, max_seeds + 1):
        if power(effect, sd_seed, se_image, seeds, alpha) >= target:
            return seeds
    return None


def _as_correct(x):
    """Per-image correctness as a flat bool array; values other than 0/1 are refused rather than
    silently thresholded."""
    x = np.asarray(x)
    if x.dtype != bool:
        if not np.all((x == 0) | (x == 1)):
            raise ValueError("per-image correctness must be 0/1 or bool")
        x = x.astype(bool)
    return x.ravel()


def mcnemar(x_correct, y_correct):
    """McNemar's exact test of two evaluations of the same images (McNemar 1947, Psychometrika
    12:153-157): -> (two-sided p, images right in x only, images right in y only). Under "x and y
    are equally accurate" each discordant image is equally likely to go either way, so the count
    right in x only is Binomial(discordant, 1/2); images both got right or both got wrong carry
    no information."""
    x, y = _as_correct(x_correct), _as_correct(y_correct)
    if x.shape != y.shape:
        raise ValueError("x and y must hold the same images, got %d and %d" % (x.size, y.size))
    x_only, y_only = int(np.sum(x & ~y)), int(np.sum(~x & y))
    if x_only + y_only == 0:
        return 1.0, x_only, y_only
    p = stats.binomtest(x_only, x_only + y_only, 0.5).pvalue
    return float(p), x_only, y_only


def wilson_interval(k, n, confidence=0.95):
    """Wilson's score interval for k successes in n (Wilson 1927, JASA 22:209-212): -> (low, high).
    Unlike the normal approximation of ``binomial_ci95`` it stays inside [0, 1] and does not
    collapse to a point at k = 0 or k = n. n = 0 carries no information: (0, 1)."""
    if not 0 <= k <= n:
        raise ValueError("need 0 <= k <= n, got k=%r, n=%r" % (k, n))
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    centre = (k + z * z / 2.0) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4.0) / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_ci95(rate, n):
    """[low, high]: Wilson's 95% interval of a rate measured on ``n`` images (the count is
    rate * n rounded: every rate here is a count of images over n). JSON-ready."""
    n = int(n)
    if n <= 0:
        return [0.0, 1.0]
    k = min(max(int(round(float(rate) * n)), 0), n)
    return list(wilson_interval(k, n))


def format_rate(rate, n, digits=1, complement=False):
    """``rate`` (or 1 - rate with ``complement``: an accuracy from an error rate) as a
    percentage with its Wilson interval, e.g. "55.3 [52.2, 58.4]"."""
    low, high = rate_ci95(rate, n)
    if complement:
        rate, low, high = 1.0 - rate, 1.0 - high, 1.0 - low
    return "%.*f [%.*f, %.*f]" % (digits, 100 * rate, digits, 100 * low, digits, 100 * high)
