"""How far the shipped perspectives move the views on examples/moderation.jsonl.

A steering setting is useful only if the steered views differ from the base
view and from each other without saturating (a view that answers the same
with probability ~1 on every record carries no per-item information). For
each (layer, coeff, centred) setting this prints, over the records:

* flip rate: share of (record, view) pairs whose answer differs from the base answer;
* spread: per record, max - min over the views of P(first option); mean and max;
* per-view sd: the standard deviation over records of each view's P(first option),
  smallest and largest over the views (near 0: the view is saturated or inert);
* mutual_info: mean over records;
* fused: how far the fused prediction (the mixture of the views) is from the base one:
  records whose answer differs, and the mean over records of |P_fused - P_base| of the first option.

Probabilities are at the model's own temperature (what steerunc outputs);
mutual_info compares the views at tau.

    python benchmarks/views_spread.py --settings 13:0.25:0,16:0.1:1,16:0.1:0,16:0.25:1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=os.path.join(REPO, "examples", "moderation.jsonl"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--settings", default="13:0.25:0,16:0.1:1,16:0.1:0,16:0.25:1",
                        help="comma-separated layer:coeff:centred (centred 0 or 1)")
    args = parser.parse_args(argv)

    from steerunc.io import read_jsonl
    from steerunc.scoring.model import load_model
    from steerunc.records import record_from_json
    from steerunc.records import ScoredRecord
    from steerunc.scoring.scorer import ScoreConfig, Scorer
    from steerunc.scoring.vectors_default import default_vectors

    model = load_model(args.model, device=args.device)
    lines = list(read_jsonl(args.input))
    bad = [line for line in lines if line.data is None]
    if bad:
        sys.exit(f"{args.input}:{bad[0].number}: {bad[0].error}")
    records = [record_from_json(line.data, line.number) for line in lines if line.data is not None]
    print(f"# {len(records)} records from {os.path.relpath(args.input, REPO)}, model {model.model_id}")
    print("| layer | coeff | centred | flip rate | spread mean | spread max | per-view sd min | per-view sd max "
          "| mutual_info mean | fused answer differs | mean abs(P_fused - P_base) |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for setting in args.settings.split(","):
        layer_s, coeff_s, centred_s = setting.split(":")
        layer, coeff, centred = int(layer_s), float(coeff_s), bool(int(centred_s))
        vectors = default_vectors(model, layer)
        scorer = Scorer(model, vectors, ScoreConfig(coeff=coeff, layer=layer, center=centred))
        outs = [o for o in scorer.score(records) if isinstance(o, ScoredRecord)]
        first = (records[0].options or [""])[0]
        flips = [view["prediction"] != o.base_prediction for o in outs for view in o.views.values()]
        spreads = [max(v["probs"][first] for v in o.views.values()) - min(v["probs"][first] for v in o.views.values())
                   for o in outs]
        sds = [statistics.pstdev(o.views[name]["probs"][first] for o in outs) for name in vectors.names]
        mi = statistics.mean(o.scores["mutual_info"] for o in outs)
        moved = sum(o.prediction != o.base_prediction for o in outs)
        shift = statistics.mean(abs(o.probs[first] - o.base_probs[first]) for o in outs)  # type: ignore[index]
        print(f"| {layer} | {coeff} | {'yes' if centred else 'no'} | {statistics.mean(flips):.2f} | "
              f"{statistics.mean(spreads):.2f} | {max(spreads):.2f} | {min(sds):.2f} | {max(sds):.2f} | {mi:.3f} | "
              f"{moved}/{len(outs)} | {shift:.3f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
