"""Judging a continuous metric per pod: the canary against the baseline's own pods (internal to the judge).

Why. A continuous metric of one pod wanders slowly (a cache, a GC rhythm, a noisy neighbour: AR(1) noise
that lasts minutes), and over a 20-minute analysis the canary's own series cannot tell that wander from a
shift -- it holds the information of fewer than ten independent intervals about its own noise level, so
the other tests must read a noise level from few, correlated intervals and pay for it with wide bounds.
The baseline's pods show that noise directly: each is a pod like the canary's, serving the same kind of
traffic, so the spread of the pods' levels over the analysis *is* the spread the canary's level would have
if the release changed nothing. With k baseline pods, under "the canary is one more pod shifted by delta":

    D = mean(canary) - mean over pods of mean(pod)             (log scale, over the same intervals)
    s^2 = sample variance of the pods' means (k - 1 degrees of freedom)
    (D - delta) / (s * sqrt(c + 1/k)) ~ Student t with k - 1 degrees of freedom

exactly for Gaussian pod levels, whatever the wander's correlation over time (it is inside each pod's
mean), and without an estimate of that correlation. ``c`` is the canary's noise relative to one pod's:
1 when the canary serves at least one pod's share of the traffic (several canary pods averaged are less
noisy still, so 1 is safe), else the ratio of the shares -- a quantile or mean over fewer requests scatters
more (sampling noise grows like 1/traffic in variance; a pod's wander does not, so this over-widens).
Comparing one pod with pods also removes the bias a quantile over fewer requests has against one over the
whole baseline (a nearest-rank p50 of 50 requests reads about 1% below one of 450).

Repeated looks. The judge tests at every interval; the test is a fixed-sample t-test at each look with its
share of the metric's budget spent over the planned looks as a group-sequential design
(:func:`aicd.judge.spending.planned_level`, Jennison & Turnbull's significance-level approach, as the
planned-look test does). The looks' means share most of their intervals, and a slow wander makes them
share even more than independent intervals would, which only lowers the chance of crossing at several looks.

Why no more than k - 1 degrees of freedom. The pods' intervals hold many more numbers than their k means,
but what they say about the spread of a pod's *mean over the analysis* rests on a model of the wander.
Pooling each interval's pod residuals as the noise (with or without a correction for their correlation over
time) reads it from how pods change within the analysis, which neither a wander slower than the analysis nor
pods that sit apart for good (a slower node) show; a canary exactly at the edge is then failed many times
beyond the budget (tests/test_judge_pods.py holds this test to its level in both worlds). A two-way (pod x
interval) split gains nothing honest either: the contrast's variance includes the pod main effect, whose
only unbiased estimate is the spread of the pods' means itself (Satterthwaite on its parts gives back k - 1
degrees of freedom); the interaction adds degrees of freedom only by assuming that effect away. The k - 1
degrees of freedom are the price of a test that holds whatever the wander.

Measured by bench/judge.py (with and without the pod series) and tests/test_judge_pods.py's level checks
at the edge. ``PER_POD_SHARES`` gives this test 0.65 of the metric's budget, spent over the plan in
proportion to the look (the planned-look test's share moved here).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from aicd.judge.blocks import BlockGrid, Points, minimum_points_per_block, summarise_blocks
from aicd.judge.sequential import Band, SequenceResult, side_threshold, t_test_result

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

MIN_PODS = 3  # two degrees of freedom at least for the pods' spread; fewer and the t-bound says nothing
POD_MIN_COVERAGE = (
    0.5  # a pod with data in fewer of the canary's intervals (started late, restarted) is left out
)


def pod_levels(
    pods: tuple[Points, ...], grid: BlockGrid, usable: BoolArray, transform: bool
) -> tuple[FloatArray, BoolArray]:
    """Each pod's interval summaries (pods x intervals, as the canary's: trimmed mean of log values when
    ``transform``) and the intervals every kept pod covers among ``usable`` ones. Pods that miss more
    than half of the usable intervals are dropped, so one pod that restarted does not cost the others
    their intervals."""
    rows: list[FloatArray] = []
    for points in pods:
        if points.size == 0:
            continue
        times, values = points.times, points.values
        if transform:  # a pod's value <= 0 has no log; the other tests compare on this scale too
            positive = values > 0
            times, values = times[positive], np.log(values[positive])
        summary = summarise_blocks(values, grid.index(times), grid.count, False)
        present = summary.points >= minimum_points_per_block(summary.points)
        if int((present & usable).sum()) >= POD_MIN_COVERAGE * max(1, int(usable.sum())):
            rows.append(np.where(present, summary.location, np.nan))
    if not rows:
        return np.zeros((0, grid.count)), np.zeros(grid.count, dtype=bool)
    levels = np.vstack(rows)
    covered = usable & np.all(np.isfinite(levels), axis=0)
    return levels, covered


def canary_noise_factor(canary_weight: float | None, pods: int) -> float:
    """The canary's noise relative to one baseline pod's (``c`` above): 1 unless the canary serves less
    traffic than one baseline pod does."""
    if canary_weight is None or not 0 < canary_weight < 100 or pods < 1:
        return 1.0
    per_pod = (100.0 - canary_weight) / pods
    return max(1.0, per_pod / canary_weight)


def pod_test(
    canary: FloatArray, pods: FloatArray, band: Band, log_threshold: float, canary_noise: float = 1.0
) -> SequenceResult:
    """The t-test of the canary's level against the band's edge(s), with the pods' spread as its noise
    (see the module docstring). ``canary``: interval summaries (n,); ``pods``: the pods' summaries on the
    same intervals (k, n). One-sided level exp(-log_threshold) per side (split over two sides like the
    other tests); ``log_evidence`` is -log(p), the bounds the t-interval's at that level."""
    threshold = side_threshold(band, log_threshold)
    count = int(canary.size)
    pod_count = int(pods.shape[0]) if pods.ndim == 2 and pods.shape[1] == count else 0
    if count == 0 or pod_count < MIN_PODS:
        return SequenceResult(None, None, None, 0.0, threshold, False, count)
    pod_means = pods.mean(axis=1)
    estimate = float(np.mean(canary) - np.mean(pod_means))
    spread = float(np.var(pod_means, ddof=1))
    standard_error = max(math.sqrt(spread * (canary_noise + 1.0 / pod_count)), 1e-9)
    degrees = float(pod_count - 1)
    return t_test_result(estimate, standard_error, degrees, band, threshold, count)
