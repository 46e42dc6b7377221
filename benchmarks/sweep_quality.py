"""Sweep layer, coefficient, signed views, K, tau and alpha on the dev (calibration) part only.

    python benchmarks/sweep_quality.py --dataset hatexplain,chaosnli,sst2 --n-dev 60

The dev items are the first ``--n-dev`` records of each data set's calibration
split (quality_data.py): never an evaluated item. The model runs once per
(layer, coefficient); tau, alpha and K are applied afterwards to the stored
views (the stored view probabilities are at temperature 1, so their logs are
the view logits up to a constant per view, which softmax ignores), with :func:`steerunc.scoring.fusion.fuse`, so they cost nothing.

Signed views (``--signed 0,1``): with 1, each perspective is read steered by +v
and by -v (2K views; centred first where centring is on). The +v views are the
unsigned views, so one signed pass gives the rows of both.
``--reuse-vectors`` loads the vectors an earlier sweep saved in
``results/sweep/`` when each file records (a SHA-256 in its metadata) that it
was built from the same annotations.
``--perspectives shipped`` steers with the model's shipped perspectives
(``steerunc score``'s defaults) instead of vectors built from each set's annotations.

Several layers at once (``--layer-sets 20+26``): each view adds its perspective's
vector built at every layer of the set, each scaled by the coefficient at its own
layer (the library steers one block; the sweep adds the later layers' vectors with
hooks on the fanned-out rows, :func:`_also_steering`). Given ``--layer-sets`` and
no ``--layers``, no single layer runs. Layer sets run unsigned.

Per setting and data set it records the dev AUROC of each score as a detector
of the base prediction's errors, the accuracy of the base and fused
predictions and, where people's label distributions exist, the mean
Jensen-Shannon distance of base and fused to them. Writes one JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from quality_data import DATASETS, by_length, load_task  # noqa: E402



#: vector-file metadata: SHA-256 of the annotations file the sweep built the vectors from
SWEEP_KEY = "sweep_annotations_sha256"


def _saved(paths: dict[int, str], digest: str, model: Any) -> dict[int, Any] | None:
    """The vectors an earlier sweep saved at every layer from annotations with this digest, else None."""
    from steerunc.scoring.vectors import load_vectors

    if not all(os.path.isfile(path) for path in paths.values()):
        return None
    loaded = {layer: load_vectors(path, model) for layer, path in paths.items()}
    return loaded if all(v.meta.get(SWEEP_KEY) == digest for v in loaded.values()) else None


def _also_steering(model: Any, scorer: Any, extra: dict[int, Any]) -> Any:
    """A context in which ``scorer``'s K views also add ``extra[layer]`` (``[K, d_model]``, already
    scaled) after each later block ``layer``, from the scorer's first steered position on."""
    from steerunc.scoring.views import hook_name

    views = len(scorer.names) + 1

    def add(steer: Any) -> Any:
        def hook(resid: Any, hook: Any) -> Any:
            if resid.shape[0] % views:
                raise RuntimeError(f"{hook.name}: {resid.shape[0]} rows are not fanned out to {views} views")
            out = resid.clone().view(resid.shape[0] // views, views, *resid.shape[1:])
            out[:, 1:, scorer.start:, :] += steer.to(resid.device, resid.dtype)[None, :, None, :]
            return out.view(resid.shape)

        return hook

    for layer in extra:
        if not scorer.layer < layer < model.n_layers - 1:
            raise ValueError(f"layer {layer}: a set's other layers must come after {scorer.layer} and before "
                             f"the final block ({model.n_layers - 1})")
    return model.bridge.hooks(fwd_hooks=[(hook_name(layer), add(steer)) for layer, steer in extra.items()])


def _layer_sets(text: str) -> list[tuple[int, ...]]:
    """'20+26,16+20' -> [(20, 26), (16, 20)]: each set of two or more layers, ascending."""
    try:
        sets = [tuple(sorted({int(x) for x in part.split("+")})) for part in text.split(",") if part.strip()]
    except ValueError:
        sets = []
    if (not sets and text.strip()) or any(len(s) < 2 for s in sets):
        raise argparse.ArgumentTypeError(f"each set names two or more layers joined by '+', got {text!r}")
    return sets


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="hatexplain,chaosnli,sst2")
    parser.add_argument("--n-dev", type=int, default=60)
    parser.add_argument("--model", default="default")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--layers", default="", help="comma-separated; default: default-3, default-1, default (model's blocks only)")
    parser.add_argument("--layer-sets", type=_layer_sets, default=[],
                        help="comma-separated sets of layers steered at once, e.g. 20+26 (coefficient per layer)")
    parser.add_argument("--coeffs", default="0.1,0.25,0.5")
    parser.add_argument("--taus", default="0.4,1.0")
    parser.add_argument("--alphas", default="0,0.2,0.5")
    parser.add_argument("--ks", default="2,4,6")
    parser.add_argument("--centers", default="0,1", help="steer with raw (0) and/or centred (1) vectors")
    parser.add_argument("--signed", default="0", help="views of +v only (0) and/or of +v and -v (1)")
    parser.add_argument("--signed-coeffs", default="",
                        help="the coefficients --signed applies to (default: all); the others run unsigned only")
    parser.add_argument("--perspectives", choices=("annotations", "shipped"), default="annotations",
                        help="vectors built from each set's annotations, or the shipped (steerunc score's) set")
    parser.add_argument("--reuse-vectors", action="store_true",
                        help="load vectors an earlier sweep saved for the same annotations and layers")
    parser.add_argument("--per-perspective", type=int, default=50,
                        help="annotated examples per perspective the vectors are built from (<= 50, the benchmark's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default=os.path.normpath(os.path.join(REPO, "..", "shared", "data")))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "sweep.json"))
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.dataset.split(",") if d]
    if set(args.datasets) - set(DATASETS):
        parser.error(f"unknown dataset in {args.dataset!r}")
    return args


def _auroc(uncertainty: np.ndarray, correct: np.ndarray) -> float | None:
    from steerunc.judging.metrics import error_auroc

    return error_auroc(uncertainty, correct)


def _rho(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _views(results: list[Any]) -> tuple[list[np.ndarray], list[Any]]:
    """Per record: [K+1, C] logits recovered from the stored view probabilities."""
    out, kept = [], []
    for r in results:
        if not hasattr(r, "views"):
            continue
        options = list(r.base_probs)
        rows = [r.base_probs] + [v["probs"] for v in r.views.values()]
        out.append(np.array([[math.log(max(row[o], 1e-45)) for o in options] for row in rows]))
        kept.append(r)
    return out, kept


def _signed(vectors: Any, center: bool) -> Any:
    """2K vectors: each perspective's (centred where asked) vector, then its negative, interleaved."""
    import torch

    from steerunc.scoring.vectors import SteeringVectors

    base = vectors.centered() if center else vectors
    meta = {key: value for key, value in base.meta.items() if key != "expect"}  # names change
    return SteeringVectors(
        names=[f"{name}{sign}" for name in base.names for sign in ("+", "-")],
        vectors=torch.stack([row * sign for row in base.vectors for sign in (1.0, -1.0)]),
        layer=base.layer, model_id=base.model_id, fingerprint=base.fingerprint, resid_norm=base.resid_norm,
        n_pairs=[n for n in base.n_pairs for _ in (0, 1)], meta={**meta, "signed": "true"},
    )


def _pick(z_list: list[np.ndarray], signed_pass: bool, signed: bool, k: int) -> list[np.ndarray]:
    """The rows of the first k perspectives: base + k views (+v), or base + 2k (+v, -v)."""
    if not signed_pass:
        return [z[: k + 1] for z in z_list]
    if signed:
        return [z[: 2 * k + 1] for z in z_list]
    return [z[[0, *range(1, 2 * k + 1, 2)]] for z in z_list]


def _setting_rows(setting: dict[str, Any], seconds: float, z_all: list[np.ndarray], kept: list[Any],
                  signed_pass: bool, signs: list[bool], taus: list[float], alphas: list[float],
                  ks: list[int]) -> list[dict[str, Any]]:
    """The rows of one scored setting, one per (signed, tau, alpha, K). K < the set's perspectives keeps
    the first K of them (centred, they were centred on all)."""
    return [{**setting, "signed": signed, "tau": tau, "alpha": alpha, "k": k, "n_dev": len(kept),
             "score_seconds": seconds, **_evaluate(_pick(z_all, signed_pass, signed, k), kept, tau, alpha)}
            for signed, tau, alpha, k in itertools.product(signs, taus, alphas, ks)]


def _evaluate(z_list: list[np.ndarray], kept: list[Any], tau: float, alpha: float) -> dict[str, Any]:
    import torch

    from steerunc.scoring.fusion import FusionConfig, fuse
    from steerunc.judging.distances import js_distance

    config = FusionConfig(tau=tau, alpha=alpha)
    scores: dict[str, list[float]] = {}
    base_ok, fused_ok, js_base, js_fused = [], [], [], []
    for z, r in zip(z_list, kept):
        fused = fuse(torch.tensor(z, dtype=torch.float64), config)  # as the options readout does
        options = list(r.base_probs)
        for name, value in fused.scores.items():
            scores.setdefault(name, []).append(float(value))
        base_ok.append(options[int(fused.logp[0].argmax())] == r.label)
        fused_ok.append(options[int(fused.fused_logp.argmax())] == r.label)
        if r.human_probs:
            human = [r.human_probs.get(o, 0.0) for o in options]
            js_base.append(float(js_distance([fused.logp[0].exp().tolist()], [human])[0]))
            js_fused.append(float(js_distance([fused.fused_logp.exp().tolist()], [human])[0]))
    correct = np.array(base_ok, dtype=float)
    from scipy.stats import spearmanr

    msp = np.array(scores["msp"])
    return {
        "auroc": {name: _auroc(np.array(v), correct) for name, v in scores.items()},
        # how much of a steering score is the base confidence again (the "fixed shift" worry)
        "spearman_with_msp": {name: _rho(spearmanr(np.array(v), msp)[0]) for name, v in scores.items()
                              if name not in ("msp", "entropy")},
        "mean": {name: float(np.mean(v)) for name, v in scores.items()},
        "base_accuracy": float(np.mean(base_ok)), "fused_accuracy": float(np.mean(fused_ok)),
        "js_base": float(np.mean(js_base)) if js_base else None,
        "js_fused": float(np.mean(js_fused)) if js_fused else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from steerunc.scoring.model import load_model
    from steerunc.scoring.scorer import ScoreConfig, Scorer

    from quality_scoring import read_records
    from steerunc.scoring.annotations import read_pairs_or_annotations
    from steerunc.scoring.vectors import build_vectors_by_layer
    from steerunc.scoring.vectors_default import default_vectors

    started = time.perf_counter()
    model = load_model(args.model, device="cpu")
    d = model.default_layer
    layer_sets: list[tuple[int, ...]] = args.layer_sets  # checked when the arguments were read, before the model loads
    layers = ([int(x) for x in args.layers.split(",")] if args.layers
              else [] if layer_sets
              else sorted({min(max(x, 0), model.n_layers - 1) for x in (d - 3, d - 1, d)}))
    needed = sorted(set(layers).union(*layer_sets))  # the layers vectors are built at
    coeffs, taus, alphas = _floats(args.coeffs), _floats(args.taus), _floats(args.alphas)
    ks = [int(x) for x in args.ks.split(",")]
    centers = [bool(int(x)) for x in args.centers.split(",") if x.strip()]
    signs = [bool(int(x)) for x in args.signed.split(",") if x.strip()]
    signed_coeffs = _floats(args.signed_coeffs) if args.signed_coeffs else coeffs
    rows: list[dict[str, Any]] = []
    work = os.path.join(os.path.dirname(args.out), "sweep")
    os.makedirs(work, exist_ok=True)
    report: dict[str, Any] = {
        "command": "python benchmarks/sweep_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "default_layer": d, "layers": layers,
        "layer_sets": ["+".join(map(str, s)) for s in layer_sets], "coeffs": coeffs, "taus": taus, "alphas": alphas,
        "ks": ks, "centers": centers, "signed": signs, "signed_coeffs": signed_coeffs,
        "perspectives": args.perspectives, "n_dev": args.n_dev, "per_perspective": args.per_perspective,
        "datasets": args.datasets, "split": "first n_dev records of each calibration split (never evaluated)",
        "complete": False, "vector_seconds": {}, "vectors_reused": {}, "rows": rows,
    }
    for dataset in args.datasets:
        task = load_task(dataset, args.data_dir, 0, args.n_dev, args.k, args.seed, args.per_perspective)
        notes = os.path.join(work, f"{dataset}-annotations.jsonl")
        dev = os.path.join(work, f"{dataset}-dev.jsonl")
        saved = {layer: os.path.join(work, f"{dataset}-L{layer}.safetensors") for layer in needed}
        text = "".join(json.dumps(a) + "\n" for a in task.annotations)
        digest = hashlib.sha256(text.encode()).hexdigest()
        earlier = _saved(saved, digest, model) if args.perspectives == "annotations" and args.reuse_vectors else None
        reuse = earlier is not None
        if args.reuse_vectors and args.perspectives == "annotations" and not reuse:
            print(f"[sweep] {dataset}: no saved vectors for these annotations and layers; building", file=sys.stderr)
        with open(notes, "w") as handle:
            handle.write(text)
        with open(dev, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in by_length(task.cal))
        records = read_records(dev)
        k_max = len(task.perspectives)
        tick = time.perf_counter()
        if args.perspectives == "shipped":
            by_layer = {layer: default_vectors(model, layer) for layer in needed}
            k_max = len(by_layer[needed[0]].names)
        elif earlier is not None:
            by_layer = earlier
        else:
            pairs, _ = read_pairs_or_annotations(notes, "annotations", "auto")
            by_layer = build_vectors_by_layer(model, pairs, needed)  # one pass to the deepest layer
        ks_here = sorted({min(k, k_max) for k in ks})  # a K above this set's perspectives means all of them
        report["vector_seconds"][dataset] = time.perf_counter() - tick
        report["vectors_reused"][dataset] = reuse
        print(f"[sweep] {dataset}: {args.perspectives} vectors at layers {needed} "
              f"{'loaded' if reuse else 'ready'} in "
              f"{report['vector_seconds'][dataset]:.0f}s", file=sys.stderr, flush=True)
        if args.perspectives == "annotations" and not reuse:
            for layer in needed:
                replace(by_layer[layer], meta={**by_layer[layer].meta, SWEEP_KEY: digest}).save(saved[layer])
        for layer in layers:
            vectors = by_layer[layer]
            # one signed pass serves the unsigned rows too (its +v views are theirs)
            for coeff, center in itertools.product(coeffs, centers):
                tick = time.perf_counter()
                signs_here = signs if coeff in signed_coeffs else [False]
                if not signs_here:
                    continue
                signed_pass = any(signs_here)
                config = ScoreConfig(coeff=coeff, center=False if signed_pass else center,
                                     batch_size=args.batch_size)
                applied = _signed(vectors, center) if signed_pass else vectors
                z_all, kept = _views(list(Scorer(model, applied, config).score_iter(records)))
                seconds = time.perf_counter() - tick
                setting = {"dataset": dataset, "perspectives": args.perspectives, "layer": layer, "coeff": coeff,
                           "center": center}
                rows += _setting_rows(setting, seconds, z_all, kept, signed_pass, signs_here, taus, alphas, ks_here)
                mi = {int(sign): _evaluate(_pick(z_all, signed_pass, sign, k_max), kept, 0.4, 0.2)
                      ["auroc"]["mutual_info"] for sign in signs_here}
                print(f"[sweep] {dataset} L{layer} c{coeff} centre={int(center)}: {len(kept)} dev records in "
                      f"{seconds:.0f}s; MI AUROC at tau 0.4 (by signed): {mi}", file=sys.stderr, flush=True)
                _write(args.out, report, started)  # after each setting: a stopped sweep keeps what it measured
        for members, coeff, center in itertools.product(layer_sets, coeffs, centers):
            tick = time.perf_counter()
            config = ScoreConfig(coeff=coeff, center=center, batch_size=args.batch_size)
            scorer = Scorer(model, by_layer[members[0]], config)
            extra = {layer: (by_layer[layer].centered() if scorer.centred else by_layer[layer]).scaled(coeff)
                     for layer in members[1:]}
            with _also_steering(model, scorer, extra):
                z_all, kept = _views(list(scorer.score_iter(records)))
            seconds = time.perf_counter() - tick
            label = "+".join(map(str, members))
            setting = {"dataset": dataset, "perspectives": args.perspectives, "layer": label, "coeff": coeff,
                       "center": center}
            rows += _setting_rows(setting, seconds, z_all, kept, False, [False], taus, alphas, ks_here)
            mi = _evaluate(_pick(z_all, False, False, k_max), kept, 0.4, 0.2)["auroc"]["mutual_info"]
            print(f"[sweep] {dataset} L{label} c{coeff} centre={int(center)}: {len(kept)} dev records in "
                  f"{seconds:.0f}s; MI AUROC at tau 0.4: {mi}", file=sys.stderr, flush=True)
            _write(args.out, report, started)
    report["complete"] = True
    _write(args.out, report, started)
    print(f"[sweep] wrote {args.out} ({len(rows)} rows) in {report['seconds']:.0f}s", file=sys.stderr)
    return 0


def _write(path: str, report: dict[str, Any], started: float) -> None:
    report["seconds"] = time.perf_counter() - started
    with open(path + ".part", "w") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
    os.replace(path + ".part", path)

if __name__ == "__main__":
    raise SystemExit(main())
