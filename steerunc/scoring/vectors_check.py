"""Do the perspectives do what they say? ``steerunc vectors check`` (docs/perspectives.md).

For each perspective k and each sign s in {+1, -1}, the probe records are read
once plainly and once steered by ``s · v_k`` (scaled and, with K >= 2, centred
exactly as :class:`~steerunc.scoring.scorer.Scorer` does by default), and the option
distribution at the model's own temperature is compared with the plain one:

* per option, the mean over records of ``p_steered(option) - p_base(option)``,
  a bootstrap interval of that mean (records resampled), the share of records
  moved towards and away from the option, and a two-sided sign test;
* ``distance``: the mean total-variation distance between the steered and the
  plain distribution (how far the view moves, whatever the direction);
* ``favours``: the option whose probability rises most on average.

An expectation says which option a perspective should favour: ``--expect
NAME=OPTION`` or an ``expect`` field on the perspective's lines of the pairs or
annotations file. A perspective with one **passes** when +v raises
P(expected option) and -v lowers it, each with its interval clear of zero (and
each mean change at least ``min_change``); otherwise it **fails** and the
result says why. A perspective without one is reported but not judged.

The model is touched only by :func:`probe_probabilities`; the statistics are
pure functions of the probabilities it returns.

>>> parse_expect_flags(["strict=Yes", " lenient = No "])
{'strict': 'Yes', 'lenient': 'No'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from steerunc.errors import InputError, VectorsError
from steerunc.io import read_jsonl
from steerunc.scoring.model import LoadedModel
from steerunc.records import Record, record_from_json
from steerunc.scoring.vectors import SteeringVectors
from steerunc.scoring.vectors_probe import ProbeRun, probe_probabilities

__all__ = [
    "FORMAT",
    "MIN_RECORDS",
    "Expectation",
    "ProbeRun",
    "parse_expect_flags",
    "merge_expectations",
    "check_expected_options",
    "read_probe",
    "probe_probabilities",
    "option_stats",
    "judge",
    "summarize",
    "check_vectors",
]

FORMAT = "steerunc-vectors-check/1"
#: fewest probe records carrying the expected option for a verdict: fewer cannot tell a move from noise
MIN_RECORDS = 5
SIGNS = ("plus", "minus")


@dataclass(frozen=True)
class Expectation:
    """Perspective ``perspective`` should make ``option`` more likely; ``source`` says who declared it."""

    perspective: str
    option: str
    source: str  # "flag", a file path, or "vectors" (stored in the vector file)


def parse_expect_flags(values: Iterable[str]) -> dict[str, str]:
    """``NAME=OPTION`` strings (``--expect``) -> {name: option}; a name given twice is an error."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, option = value.partition("=")
        name, option = name.strip(), option.strip()
        if not sep or not name or not option:
            raise InputError(f"--expect {value!r}: expected NAME=OPTION, e.g. strict_moderator=Yes")
        if name in out and out[name] != option:
            raise InputError(f"--expect names {name!r} twice ({out[name]!r} and {option!r})")
        out[name] = option
    return out


def merge_expectations(names: Sequence[str], *sources: tuple[str, Mapping[str, str]]) -> dict[str, Expectation]:
    """Expectations for the perspectives ``names``, later sources overriding earlier ones.

    Each source is ``(label, {perspective: option})``. A ``"flag"`` source naming a
    perspective the vectors lack is an error; a file may declare perspectives the
    vectors lack (a pairs file shared by several vector sets) and those are ignored.
    """
    out: dict[str, Expectation] = {}
    for label, declared in sources:
        unknown = [n for n in declared if n not in names]
        if unknown and label == "flag":
            raise InputError(
                f"--expect names perspective(s) the vectors lack: {', '.join(unknown)} "
                f"(they have: {', '.join(names)})"
            )
        for name, option in declared.items():
            if name in names:
                out[name] = Expectation(name, option, label)
    return {n: out[n] for n in names if n in out}


def check_expected_options(expectations: Mapping[str, Expectation], records: Sequence[Record]) -> None:
    """Refuse an expectation whose option no probe record offers: it could never be checked."""
    offered = {o for r in records for o in (r.options or [])}
    for exp in expectations.values():
        if exp.option not in offered:
            where = "--expect" if exp.source == "flag" else exp.source
            raise InputError(
                f"perspective {exp.perspective!r} is expected to favour {exp.option!r} ({where}), but no probe "
                f"record has that option (options: {', '.join(sorted(offered))}); use a probe with it, "
                f"--expect {exp.perspective}=OPTION, or --ignore-declared"
            )


def read_probe(path: str, default_options: list[str] | None = None) -> list[Record]:
    """Probe records: every line must be a valid record with ``options`` (or ``default_options``).

    Strict: a malformed line, a record with no options or one with a
    ``continuation`` raises :class:`InputError` naming the file and line.
    """
    records: list[Record] = []
    for line in read_jsonl(path):
        if line.error is not None or line.data is None:
            raise InputError(line.error or "empty line", path=path, line=line.number)
        try:
            record = record_from_json(line.data, line.number, default_options)
        except InputError as exc:
            raise InputError(exc.message, path=path, line=line.number) from exc
        if record.mode != "options":
            what = "has a 'continuation'" if record.mode == "continuation" else "has no 'options'"
            raise InputError(
                f"probe record {what}: a check compares option distributions, so every record needs "
                "'options' (or pass --options for records without them)",
                path=path, line=line.number,
            )
        records.append(record)
    if not records:
        raise InputError("no probe records in file", path=path)
    return records


# ---------------------------------------------------------------------- statistics
def _sign_test(up: int, down: int) -> float:
    """Two-sided exact sign test p-value (ties dropped); 1.0 with no moves."""
    n = up + down
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(up, n, 0.5).pvalue)


def option_stats(
    deltas: np.ndarray, present: np.ndarray, weights: np.ndarray, confidence: float
) -> dict[str, Any]:
    """Summary of one column of changes: ``deltas`` [N] (ignored where ``present`` is False),
    ``weights`` [B, N] bootstrap resample counts."""
    d = deltas[present]
    n = int(d.size)
    if n == 0:
        return {"n": 0, "mean_change": None, "low": None, "high": None,
                "moved_up": None, "moved_down": None, "sign_p": None}
    w = weights[:, present]
    counts = w.sum(1)
    boot = (w @ d)[counts > 0] / counts[counts > 0]
    alpha = (1.0 - confidence) / 2.0
    low, high = (np.quantile(boot, [alpha, 1.0 - alpha]) if boot.size else (d.mean(), d.mean()))
    up, down = int((d > 0).sum()), int((d < 0).sum())
    return {
        "n": n,
        "mean_change": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "moved_up": up / n,
        "moved_down": down / n,
        "sign_p": _sign_test(up, down),
    }


def _fmt(x: float) -> str:
    return f"{x:+.4f}"


def judge(
    option: str, plus: Mapping[str, Any], minus: Mapping[str, Any], confidence: float, min_change: float = 0.0
) -> tuple[str, str]:
    """``("pass", "")`` when +v raises P(option) and -v lowers it, each beyond its interval;
    else ``("fail", why)``. ``plus`` / ``minus``: :func:`option_stats` of that option."""
    n = plus.get("n") or 0
    if n < MIN_RECORDS:
        return "fail", (f"only {n} probe record(s) offer {option!r}: at least {MIN_RECORDS} are needed "
                        "to tell a move from noise")
    level = f"{round(confidence * 100, 1):g}%"
    why = []
    for sign, stats, want in (("+v", plus, 1), ("-v", minus, -1)):
        mean, low, high = stats["mean_change"], stats["low"], stats["high"]
        interval = f"mean {_fmt(mean)}, {level} interval [{_fmt(low)}, {_fmt(high)}]"
        clear = low > 0 if want > 0 else high < 0
        big = mean >= min_change if want > 0 else mean <= -min_change
        should = "raise" if want > 0 else "lower"
        if clear and big:
            continue
        if (want > 0 and high < 0) or (want < 0 and low > 0):
            did = "lowers" if want > 0 else "raises"
            why.append(f"{sign} {did} P({option}) instead ({interval})")
        elif not clear:
            why.append(f"{sign} does not {should} P({option}) beyond noise ({interval})")
        else:
            why.append(f"{sign} moves P({option}) by less than --min-change {min_change:g} ({interval})")
    return ("pass", "") if not why else ("fail", "; ".join(why))


def summarize(
    run: ProbeRun,
    expectations: Mapping[str, Expectation] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_change: float = 0.0,
) -> dict[str, Any]:
    """The full check result (JSON-ready; schema ``steerunc-vectors-check/1``, docs/perspectives.md)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    expectations = dict(expectations or {})
    n, k = len(run.records), len(run.names)
    options: list[str] = []
    for record in run.records:
        options += [o for o in record.options or [] if o not in options]
    column = {o: j for j, o in enumerate(options)}
    c = len(options)
    present = np.zeros((n, c), dtype=bool)
    base = np.zeros((n, c))
    steered = np.zeros((2, n, k, c))
    for i, record in enumerate(run.records):
        cols = [column[o] for o in record.options or []]
        present[i, cols] = True
        base[i, cols] = run.base[i]
        steered[0, i][:, cols] = run.plus[i]
        steered[1, i][:, cols] = run.minus[i]
    change = steered - base[None, :, None, :]  # [2, N, K, C], 0 where absent
    distance = 0.5 * np.abs(change).sum(-1)  # [2, N, K] total variation
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # [B, N]

    perspectives = []
    for j, name in enumerate(run.names):
        entry: dict[str, Any] = {"name": name}
        for s, sign in enumerate(SIGNS):
            per_option = {o: option_stats(change[s, :, j, col], present[:, col], weights, confidence)
                          for o, col in column.items()}
            means = {o: st["mean_change"] for o, st in per_option.items() if st["mean_change"] is not None}
            entry[sign] = {
                "distance": float(distance[s, :, j].mean()),
                "favours": max(means, key=lambda o: means[o]) if means else None,
                "options": per_option,
            }
        exp = expectations.get(name)
        if exp is None:
            entry.update(expect=None, expect_source=None, status="none", reason="no expectation declared")
        else:
            if exp.option in column:
                status, reason = judge(exp.option, entry["plus"]["options"][exp.option],
                                       entry["minus"]["options"][exp.option], confidence, min_change)
            else:
                status, reason = "fail", f"no probe record offers {exp.option!r}"
            entry.update(expect=exp.option, expect_source=exp.source, status=status, reason=reason)
        perspectives.append(entry)

    records = []
    for i, record in enumerate(run.records):
        opts = list(record.options or [])
        records.append({
            "id": record.id,
            "line": record.line,
            "base": dict(zip(opts, run.base[i].tolist())),
            "plus": {name: dict(zip(opts, run.plus[i][j].tolist())) for j, name in enumerate(run.names)},
            "minus": {name: dict(zip(opts, run.minus[i][j].tolist())) for j, name in enumerate(run.names)},
        })
    judged = [p for p in perspectives if p["status"] != "none"]
    failed = [p["name"] for p in judged if p["status"] == "fail"]
    base_mean = {o: float(base[present[:, col], col].mean()) for o, col in column.items()}
    return {
        "format": FORMAT,
        "layer": run.layer,
        "coeff": run.coeff,
        "centered": run.centered,
        "temperature": 1.0,
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
        "min_change": min_change,
        "n_records": n,
        "options": options,
        "base_mean": base_mean,
        "perspectives": perspectives,
        "n_expectations": len(judged),
        "failed": failed,
        "passed": not failed,
        "records": records,
    }


def check_vectors(
    model: LoadedModel,
    vectors: SteeringVectors,
    records: Sequence[Record],
    expectations: Mapping[str, Expectation] | None = None,
    coeff: float = 0.1,
    center: bool | None = None,
    batch_size: int = 8,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    min_change: float = 0.0,
) -> dict[str, Any]:
    """:func:`probe_probabilities` then :func:`summarize`: the whole check in one call."""
    expectations = dict(expectations or {})
    unknown = [n for n in expectations if n not in vectors.names]
    if unknown:
        raise VectorsError(f"expectations for perspective(s) the vectors lack: {', '.join(unknown)}")
    check_expected_options(expectations, records)
    run = probe_probabilities(model, vectors, records, coeff=coeff, center=center, batch_size=batch_size)
    return summarize(run, expectations, confidence=confidence, n_boot=n_boot, seed=seed, min_change=min_change)
