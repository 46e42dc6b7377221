"""The combined calibrator's guard on synthetic populations: the dev evidence for its rule.

    python benchmarks/guard_dev.py [--draws 40] [--n-cal 200] [--seed 1]

The guard (steerunc/judging/calibration_combined.py) keeps a combination of
scores only where cross-validation on the calibration records shows it clearly
better than the first score alone. Its rule (held-out log loss lower by more
than one standard error) was chosen here, on populations whose truth is known,
never on a shared data set's evaluated split. Each population draws
``--n-cal`` calibration records (as bench_quality's calibration split) and
3,000 fresh records to judge on; per population it prints how often each rule
keeps the combination and the AUROC of the resulting confidence minus that of
msp alone (mean over draws, and the 5th percentile: how bad an unlucky fit is):

* ``helps``:  two scores each carry part of the errors (tests/test_calibration_combined.py's population);
* ``weak``:   a second score carries a little extra signal, two more carry none;
* ``noise``:  msp carries the errors; three more scores are pure noise;
* ``echo``:   three more scores are msp plus noise (correlated, no extra signal);
* ``chance``: nothing carries the errors (a model at chance).

Rules: ``never`` (msp alone), ``always`` (the unguarded combination), ``mean`` (keep
where the mean held-out log loss is lower at all), ``one-se`` (the guard).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steerunc.judging.calibration_combined import CombinedCalibrator  # noqa: E402
from steerunc.judging.metrics import error_auroc  # noqa: E402


def _auroc(uncertainty: np.ndarray, ok: np.ndarray) -> float:
    """Error AUROC; every population here has both right and wrong items, so None is a bug."""
    value = error_auroc(uncertainty, ok)
    if value is None:
        raise RuntimeError("a synthetic population came out with a single class")
    return value

NAMES = ["msp", "mutual_info", "mean_kl", "flip_rate"]  # all uncertainty scores: higher = less sure


def _logistic(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


def population(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores, correct, score names) for n records; scores are uncertainties (higher = less sure)."""
    if name == "helps":
        s = rng.uniform(size=(n, 2))
        error = 0.4 * np.clip((0.6 * s[:, 0] + 0.4 * s[:, 1] - 0.15) / 0.5, 0.0, 1.0)
        return s, (rng.uniform(size=n) >= error).astype(float), NAMES[:2]
    u = rng.normal(size=n)  # the uncertainty msp reads
    if name == "weak":
        extra = rng.normal(size=n)
        ok = rng.uniform(size=n) < _logistic(-u - 0.4 * extra)
        s = np.c_[u, extra + 0.8 * rng.normal(size=n), 0.9 * u + 0.45 * rng.normal(size=n), rng.normal(size=n)]
    elif name == "noise":
        ok = rng.uniform(size=n) < _logistic(-u)
        s = np.c_[u, rng.normal(size=(n, 3))]
    elif name == "echo":
        ok = rng.uniform(size=n) < _logistic(-u)
        s = np.c_[u, 0.9 * u[:, None] + 0.45 * rng.normal(size=(n, 3))]
    elif name == "chance":
        ok = rng.uniform(size=n) < 0.55
        s = rng.normal(size=(n, 4))
    else:
        raise ValueError(name)
    return s, ok.astype(float), NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=40, help="calibration draws per population")
    parser.add_argument("--n-cal", type=int, default=200, help="calibration records per draw")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(f"{args.draws} draws of {args.n_cal} calibration records per population, judged on 3,000 fresh ones "
          f"(seed {args.seed}). AUROC of the confidence minus AUROC of msp alone: mean, 5th percentile.\n")
    print(f"{'population':<8} | {'rule':<7} | {'kept':>5} | {'mean':>8} | {'5th pct':>8}")
    for name in ("helps", "weak", "noise", "echo", "chance"):
        gains: dict[str, list[float]] = {"never": [], "always": [], "mean": [], "one-se": []}
        kept = {"always": args.draws, "never": 0, "mean": 0, "one-se": 0}
        for _ in range(args.draws):
            s, ok, names = population(name, args.n_cal, rng)
            test, ok_test, _ = population(name, 3000, rng)
            guarded = CombinedCalibrator(names).fit(s, ok)
            free = CombinedCalibrator(names, guard=False).fit(s, ok)
            alone = _auroc(test[:, 0], ok_test)
            gain = _auroc(-free.predict(test), ok_test) - alone
            guard = guarded.guard_ or {}
            by_mean = guard.get("difference", 1.0) < 0
            by_one_se = guarded.kept == "combination"
            kept["mean"] += by_mean
            kept["one-se"] += by_one_se
            gains["never"].append(0.0)
            gains["always"].append(gain)
            gains["mean"].append(gain if by_mean else 0.0)
            gains["one-se"].append(_auroc(-guarded.predict(test), ok_test) - alone)
        for rule, values in gains.items():
            print(f"{name:<8} | {rule:<7} | {kept[rule]:>5} | {np.mean(values):+8.4f} | "
                  f"{np.percentile(values, 5):+8.4f}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
