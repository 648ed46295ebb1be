"""The paper's claims, each fixed here before the run with the metric it is judged under, and
their verdicts from the two-level statistics of evaluation/stats.py.

How a claim is judged:
- Each comparison pairs two rows on the seeds both have (at least ``MIN_SEEDS``) and the same
  test images: ``stats.paired_difference`` (seeds and images crossed, Satterthwaite df). No
  variance comes from any other row.
- A claim about several pairs ("every denoising op beats the baseline") holds only if every
  pair shows it: an intersection-union test, whose p-value is the largest of the pairs' (Berger
  1982, Technometrics 24:295-300), so no correction is needed inside the claim.
- Claims of "similar" are equivalence tests (TOST) against ``MARGIN``, fixed before the run; a
  difference that is not significant does not make two models similar. Claims of "no better"
  (a is not better than b by more than the margin) are the one-sided half of it.
- Holm's correction runs over every claim measured (the family), at ``ALPHA``.
- A verdict is "holds", "contradicted" (some pair significantly the other way, or, for
  "similar" and "no better", significantly beyond the margin, at ALPHA / family size) or "not
  shown" (neither: the data cannot tell at this scale). Too few seeds: "not measured".
- A row the budget cut leaves its pairs out of a claim about several pairs: the claim is judged
  on the pairs that remain, and the page names the rows it no longer covers (so Fig. 7's claims
  are judged on the ops the budget kept rather than not at all). A claim all of whose pairs were
  cut is "not measured".

White-box claims are judged under untargeted PGD-10 at the training epsilon, not the paper's
targeted PGD-10: on 10 classes a targeted attack reaches its target on few images, so accuracy
under it stays within a few points of clean accuracy and hides the differences between models
(the tables give both).
"""
import dataclasses
import math
from typing import Optional, Tuple

import numpy as np

from evaluation import stats
from evaluation.blackbox import ALL_OR_NOTHING

ALPHA = 0.05
MARGIN = 0.01          # the equivalence margin: one point of accuracy
MIN_SEEDS = 2
POWER_TARGET = 0.8
EQUIVALENCE = {"similar": 2, "no-better": 1}      # claims judged against MARGIN: their sides

OPS = ("mean", "median", "bilateral", "nonlocal-dot", "nonlocal")


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    text: str
    where: str
    kind: str                              # greater | less | similar | no-better
    metric: str                            # results.Row metric of the first row of each pair
    pairs: Tuple[Tuple[str, str], ...]     # (a, b): the claim is about a - b
    metric_b: Optional[str] = None         # the second row's metric, when it differs (Fig. 6)
    paper_effect: Optional[float] = None   # the paper's difference, in points, for the power statement
    paper_note: str = ""


CLAIMS = (
    Claim("ops>baseline", "every denoising op is more robust than the baseline", "Fig. 7 (i)", "greater", "pgd10",
          tuple((op, "baseline") for op in OPS), paper_effect=3.2,
          paper_note="non-local Gaussian vs baseline, PGD-10 (55.7 vs 52.5)"),
    Claim("ops>bottleneck", "every denoising op is more robust than +4 bottleneck blocks", "Fig. 7 (ii)", "greater",
          "pgd10", tuple((op, "bottleneck") for op in OPS)),
    Claim("ops>null", "every denoising op is more robust than +4 null (1x1) blocks", "Fig. 7 (iii)", "greater",
          "pgd10", tuple((op, "null") for op in OPS)),
    Claim("bottleneck>baseline", "adding bottleneck blocks helps", "Sec. 6.1", "greater", "pgd10",
          (("bottleneck", "baseline"),)),
    Claim("gaussian>dot", "non-local Gaussian is (marginally) better than dot product", "Sec. 6.1", "greater",
          "pgd10", (("nonlocal", "nonlocal-dot"),)),
    Claim("nonlocal>baseline-long", "non-local Gaussian beats the baseline under a long attack", "Sec. 6.1, Fig. 6",
          "greater", "pgd100", (("nonlocal", "baseline"),), paper_effect=3.4,
          paper_note="at 2000 iterations (42.6 vs 39.2)"),
    Claim("longer<shorter", "accuracy falls as the attack runs longer (same images)", "Fig. 6", "less", "pgd100",
          (("baseline", "baseline"),), metric_b="pgd10@long"),
    Claim("1x1", "removing the 1x1 conv lowers accuracy", "Table 1", "greater", "pgd10",
          (("nonlocal", "nonlocal-no1x1"),), paper_effect=3.6, paper_note="PGD-10 (55.7 vs 52.1)"),
    Claim("1x1-long", "removing the 1x1 conv lowers accuracy under the long attack", "Table 1", "greater", "pgd100",
          (("nonlocal", "nonlocal-no1x1"),), paper_effect=8.7, paper_note="PGD-100 (45.5 vs 36.8)"),
    Claim("null>baseline-bb", "null blocks beat the baseline (black-box)", "Table 2", "greater", ALL_OR_NOTHING,
          (("null", "baseline"),), paper_effect=1.0, paper_note="44.1 vs 43.1"),
    Claim("nonlocal>null-bb", "non-local Gaussian beats null (black-box)", "Table 2", "greater", ALL_OR_NOTHING,
          (("nonlocal", "null"),), paper_effect=2.3, paper_note="46.4 vs 44.1"),
    Claim("dot>null-bb", "non-local dot product beats null (black-box)", "Table 2", "greater", ALL_OR_NOTHING,
          (("nonlocal-dot", "null"),), paper_effect=2.1, paper_note="46.2 vs 44.1"),
    Claim("gaussian~dot-bb", "non-local Gaussian and dot product perform similarly (black-box)", "Table 2",
          "similar", ALL_OR_NOTHING, (("nonlocal", "nonlocal-dot"),), paper_effect=0.2, paper_note="46.4 vs 46.2"),
    Claim("local~null-bb", "local filters (mean, median, bilateral) are no better than null (black-box)", "Table 2",
          "no-better", ALL_OR_NOTHING, tuple((op, "null") for op in ("mean", "median", "bilateral")),
          paper_note="43.6 to 44.4 vs 44.1"),
    Claim("all-blocks-bb", "denoising after every residual block beats 4 blocks (black-box)", "Sec. 6.2", "greater",
          ALL_OR_NOTHING, (("deep-nonlocal-all", "deep-nonlocal"),), paper_effect=3.1, paper_note="49.5 vs 46.4"),
    Claim("clean-similar", "with clean training, denoising makes no difference on clean images", "Table 3",
          "similar", "clean", (("clean-nonlocal", "clean-baseline"),), paper_effect=0.17,
          paper_note="79.08 vs 78.91"),
    Claim("adv-costs-clean", "adversarial training costs clean accuracy", "Sec. 6.3", "greater", "clean",
          (("clean-baseline", "baseline"), ("clean-nonlocal", "nonlocal")), paper_effect=16.6,
          paper_note="baseline 78.91 vs 62.32"),
)


@dataclasses.dataclass
class Judged:
    claim: Claim
    diffs: list                 # [(a, b, stats.Difference)]
    status: str                 # measured | not measured
    why: str = ""               # when not measured
    p: float = math.nan         # the claim's p (intersection-union), before Holm
    p_holm: float = math.nan
    verdict: str = "not measured"
    noise: list = dataclasses.field(default_factory=list)    # [(sd_seed, se_image)] per pair
    power: Optional[float] = None       # at the paper's effect, the weakest pair, at ALPHA
    detectable: Optional[float] = None  # smallest effect detected with POWER_TARGET, weakest pair
    cut_rows: list = dataclasses.field(default_factory=list)    # rows cut by the budget: pairs left out


def _pair(rows, claim, a, b):
    """(stats.Difference, (sd_seed, se_image)) or a string saying what is missing."""
    ra, rb = rows.get(a), rows.get(b)
    metric_b = claim.metric_b or claim.metric
    if ra is None or rb is None:
        return "row %s not in this run (--variants)" % (a if ra is None else b)
    seeds = sorted(set(ra.seeds(claim.metric)) & set(rb.seeds(metric_b)))
    if len(seeds) < MIN_SEEDS:
        return "%d seed(s) of %s vs %s so far (a verdict needs %d)" % (len(seeds), a, b, MIN_SEEDS)
    xa, xb = ra.matrix(claim.metric, seeds), rb.matrix(metric_b, seeds)
    if xa.shape[1] != xb.shape[1]:
        return "%s and %s were evaluated on different images" % (a, b)
    return stats.paired_difference(xa, xb), stats.noise_levels(xa, xb)


def judge(rows, claims=CLAIMS, cut=()):
    """[Judged] for every claim, with Holm's correction over those measured; ``cut``: rows the
    budget cut (their pairs are left out of a claim; a claim with no pair left is not measured)."""
    out = []
    for claim in claims:
        diffs, noise, why = [], [], ""
        cut_rows = list(dict.fromkeys(n for pair in claim.pairs for n in pair if n in cut))
        kept = [(a, b) for a, b in claim.pairs if a not in cut and b not in cut]
        if not kept:
            out.append(Judged(claim, [], "not measured", "row %s cut by the budget" % cut_rows[0],
                              cut_rows=cut_rows))
            continue
        for a, b in kept:
            got = _pair(rows, claim, a, b)
            if isinstance(got, str):
                why = got
                break
            diffs.append((a, b, got[0]))
            noise.append(got[1])
        if why:
            out.append(Judged(claim, diffs, "not measured", why, cut_rows=cut_rows))
            continue
        j = Judged(claim, diffs, "measured", noise=noise, cut_rows=cut_rows)
        j.p = _union_p(claim, [d for _, _, d in diffs])
        out.append(j)
    measured = [j for j in out if j.status == "measured"]
    adjusted, _ = stats.holm([j.p for j in measured], ALPHA)
    family = max(len(measured), 1)
    for j, p_holm in zip(measured, adjusted):
        j.p_holm = p_holm
        j.verdict = _verdict(j, family)
        seeds = j.diffs[0][2].seeds
        # the weakest pair decides an intersection-union claim: the largest noise
        sd, se = max(j.noise, key=lambda x: x[0] ** 2 / seeds + x[1] ** 2)
        j.detectable = stats.detectable_effect(sd, se, seeds, ALPHA, POWER_TARGET)
        if j.claim.kind in EQUIVALENCE:
            # the chance to conclude it if the two were equal
            j.power = stats.equivalence_power(MARGIN, sd, se, seeds, ALPHA, sides=EQUIVALENCE[j.claim.kind])
        elif j.claim.paper_effect is not None:
            j.power = stats.power(j.claim.paper_effect / 100.0, sd, se, seeds, ALPHA)
    return out


def _union_p(claim, diffs):
    """The intersection-union p-value: every pair must show the claim, so the claim's p is the
    largest of the pairs' (a pair in the wrong direction gives 1)."""
    if claim.kind == "similar":
        return max(stats.equivalence(d, MARGIN)[1] for d in diffs)
    if claim.kind == "no-better":      # rejects "a beats b by the margin or more"
        return max(stats.no_better(d, MARGIN) for d in diffs)
    sign = 1.0 if claim.kind == "greater" else -1.0
    return max(d.p if sign * d.estimate > 0 else 1.0 for d in diffs)


def _verdict(j, family):
    if j.p_holm < ALPHA:
        return "holds"
    strict = ALPHA / family           # a contradiction is also one claim of the family
    sign = 1.0 if j.claim.kind == "greater" else -1.0
    for _, _, d in j.diffs:
        if j.claim.kind in EQUIVALENCE:
            if stats.beyond_margin(d, MARGIN, 0 if j.claim.kind == "similar" else +1) < strict:
                return "contradicted"
        elif d.p < strict and sign * d.estimate < 0:
            return "contradicted"
    return "not shown"


def residual_rule(rows, num_classes=10):
    """Table 1: "removing the residual connection makes training unstable, and its loss does
    not decrease" (the table shows NaN). Not a statistical test, a rule fixed in advance: a
    seed fails if its loss went NaN/inf, or if its last-epoch training loss is closer to the
    chance-level loss ln(K) than to the mean last-epoch loss of the same block with its
    residual connection. -> (evidence, verdict)."""
    r, ref = rows.get("nonlocal-noresidual"), rows.get("nonlocal")
    if r is None or ref is None or not ref.final_loss:
        return "–", "not measured"
    chance = math.log(num_classes)
    reference = float(np.mean(list(ref.final_loss.values())))
    judged = sorted(set(r.trained_seeds) | set(r.diverged))
    midway = (chance + reference) / 2
    failed = [s for s in judged if s in r.diverged or (s in r.final_loss and r.final_loss[s] > midway)]
    losses = ", ".join("%.2f" % r.final_loss[s] for s in sorted(r.final_loss))
    evidence = "%s; last-epoch training loss %s, vs %.2f with the residual and %.2f at chance" % (
        "NaN in seed(s) %s" % ",".join(map(str, r.diverged)) if r.diverged else "no NaN", losses or "–",
        reference, chance)
    if len(judged) < MIN_SEEDS:
        return evidence, "not measured"
    if len(failed) == len(judged):
        return evidence, "holds (training failed in all %d seeds)" % len(judged)
    if not failed:
        return evidence, "contradicted (trained in all %d seeds)" % len(judged)
    return evidence, "not shown (failed in %d of %d seeds)" % (len(failed), len(judged))
