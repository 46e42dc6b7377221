"""Turn the labelled data sets in ../shared/data into steerunc tasks (docs/benchmarks.md).

Each loader returns a :class:`Task`: steerunc input records split into a
calibration/dev part and an evaluated part, plus annotated examples (at most
50 per perspective) from a third, disjoint part, which build the perspective
vectors. Every split is deterministic (a seeded shuffle, or the data set's own
train/validation/test files) and does not depend on ``n``: asking for more
evaluated items only appends items.

The data are read in place, never copied: several sets are research-only.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Task", "DATASETS", "load_task", "by_length", "PER_PERSPECTIVE"]

#: annotated examples per perspective (the seed work's budget)
PER_PERSPECTIVE = 50

Item = dict[str, Any]


@dataclass
class Task:
    """One data set, converted: records for calibration and evaluation, annotations for vectors."""

    name: str
    template: str  # the prompt template, as documented
    cal: list[Item]  # calibration / dev records (never evaluated)
    eval: list[Item]  # evaluated records
    perspectives: dict[str, str]  # name -> the perspective written as text (prompt ensemble)
    annotations: list[Item]  # lines for `steerunc vectors build --from annotations`
    recipe: str  # "answer" or "feedback"
    how: str  # how the perspectives were derived
    sources: list[str] = field(default_factory=list)  # data files read


def _shuffled(items: list[Any], seed: int) -> list[Any]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def by_length(items: list[Item]) -> list[Item]:
    """Similar lengths batch together (less padding); the order changes no score."""
    return sorted(items, key=lambda x: (len(x["text"]) + sum(len(o) for o in x["options"]), x["id"]))


def _personas(prompts: list[str], personas: dict[str, str]) -> list[Item]:
    """Feedback-recipe annotations: every persona note on the same prompts."""
    return [
        {"perspective": name, "text": text, "feedback": note}
        for name, note in personas.items()
        for text in prompts[:PER_PERSPECTIVE]
    ]


def _take(personas: dict[str, str], k: int) -> dict[str, str]:
    return dict(list(personas.items())[:k])


# ------------------------------------------------------------------- sst2
SST2_TEMPLATE = 'Review: "{sentence}"\nIs the sentiment of this review positive or negative? Answer:'
SST2_PERSONAS = {
    "harsh_critic": "As a harsh film critic, I rarely like what I see.",
    "enthusiast": "As an enthusiastic moviegoer, I enjoy almost every film.",
    "irony_reader": "I read every review looking for sarcasm and irony.",
    "literal_reader": "I take every review literally, word by word.",
    "plot_focus": "I care only about the story and the plot.",
    "acting_focus": "I care only about the acting and the actors.",
}


def _sst2(data: str, seed: int, k: int) -> Task:
    path = os.path.join(data, "sst2", "test.tsv")
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    items = [
        {"id": f"sst2-{i}", "text": SST2_TEMPLATE.format(sentence=r["sentence"].strip()),
         "options": ["negative", "positive"], "label": ["negative", "positive"][int(r["label"])]}
        for i, r in enumerate(rows)
    ]
    pool = _shuffled(items, seed)
    personas = _take(SST2_PERSONAS, k)
    return Task("sst2", SST2_TEMPLATE, pool[72:372], pool[372:], personas,
                _personas([x["text"] for x in pool[:72]], personas), "feedback",
                "hand-written reader personas (feedback recipe) on 50 held-out reviews", [path])


# ------------------------------------------------------------- hatexplain
HATE_TEMPLATE = 'Post: "{post}"\nIs this post hateful, offensive, or normal? Answer:'
HATE_OPTIONS = ["hateful", "offensive", "normal"]
_HATE_LABEL = {0: "hateful", 1: "normal", 2: "offensive"}
_SEVERITY = {"normal": 0, "offensive": 1, "hateful": 2}
_COMMUNITY_SKIP = {"None", "Other"}


def _hate_rows(path: str) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            notes = ast.literal_eval(row["annotators"])
            labels = [_HATE_LABEL[int(x)] for x in notes["label"]]
            counts = Counter(labels)
            top, votes = counts.most_common(1)[0]
            if votes == 1:  # three different labels: no majority (HateXplain drops these)
                continue
            text = " ".join(ast.literal_eval(row["post_tokens"]))
            out.append({
                "id": row["id"], "text": HATE_TEMPLATE.format(post=text), "options": HATE_OPTIONS, "label": top,
                "human_probs": {o: counts[o] / len(labels) for o in HATE_OPTIONS},
                "_labels": labels, "_targets": [list(t) for t in notes["target"]],
            })
    return out


def _hatexplain(data: str, seed: int, k: int) -> Task:
    val_path = os.path.join(data, "hatexplain", "df_val_processed.csv")
    test_path = os.path.join(data, "hatexplain", "df_test_processed.csv")
    val = _shuffled(_hate_rows(val_path), seed)
    build, cal = val[:1200], val[1200:]
    counts = Counter(t for r in build for ts in r["_targets"] for t in set(ts) if t not in _COMMUNITY_SKIP)
    names = [name for name, _ in counts.most_common(k)]
    annotations = []
    for name in names:
        lines = []
        for r in build:
            naming = [lab for lab, ts in zip(r["_labels"], r["_targets"]) if name in ts]
            if not naming:
                continue
            answer = max(naming, key=_SEVERITY.__getitem__)  # the reading most alert to harm against them
            contrast = min(r["_labels"], key=_SEVERITY.__getitem__)
            if contrast == answer:
                if answer == "normal":
                    continue
                contrast = "normal"
            disputed = len(set(r["_labels"])) > 1
            lines.append((not disputed, {"perspective": name, "text": r["text"], "answer": answer,
                                         "contrast": contrast}))
        lines.sort(key=lambda pair: pair[0])  # disputed posts first (stable)
        annotations += [line for _, line in lines[:PER_PERSPECTIVE]]
    test = _shuffled(_hate_rows(test_path), seed)
    strip = lambda rs: [{k2: v for k2, v in r.items() if not k2.startswith("_")} for r in rs]  # noqa: E731
    notes = {n: f"Read this post from the perspective of the {n} community." for n in names}
    return Task("hatexplain", HATE_TEMPLATE, strip(cal), strip(test), notes, annotations, "answer",
                "target communities named by annotators (answer recipe: the most severe label given by an "
                "annotator who named the community vs. the mildest label given to the post), 1,200 "
                "validation posts; calibration on the other validation posts, evaluation on test",
                [val_path, test_path])


# --------------------------------------------------------------- chaosnli
NLI_TEMPLATE = 'Premise: "{premise}"\nHypothesis: "{hypothesis}"\nIs the hypothesis true given the premise? Answer yes, maybe, or no. Answer:'
NLI_OPTIONS = ["yes", "maybe", "no"]  # entailment, neutral, contradiction
_NLI = {"e": "yes", "n": "maybe", "c": "no"}
NLI_RATIONALES = {  # (minority answer, majority answer): the reading that leads there
    ("e", "n"): "A generous reader: what the premise makes likely counts as true.",
    ("n", "e"): "A strict reader: only what the premise states for certain counts as true.",
    ("c", "n"): "A reader who takes details the premise leaves out as false.",
    ("n", "c"): "A reader who assumes the two sentences may describe different scenes.",
    ("c", "e"): "A reader who treats any mismatch in detail as a contradiction.",
    ("e", "c"): "A charitable reader who resolves apparent conflicts as the same scene.",
}


def _chaosnli(data: str, seed: int, k: int, part: str = "snli") -> Task:
    path = os.path.join(data, "chaosnli", f"chaosNLI_{part}.jsonl")
    items = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            dist = dict(zip("enc", r["label_dist"]))
            items.append({
                "id": r["uid"], "options": NLI_OPTIONS, "label": _NLI[r["majority_label"]],
                "text": NLI_TEMPLATE.format(premise=r["example"]["premise"].strip(),
                                            hypothesis=r["example"]["hypothesis"].strip()),
                "human_probs": {_NLI[c]: dist[c] for c in "enc"}, "_dist": dist, "_major": r["majority_label"],
            })
    pool = _shuffled(items, seed)
    build, cal, ev = pool[:500], pool[500:800], pool[800:]
    found = []
    for (minority, majority), note in NLI_RATIONALES.items():
        lines = [
            {"perspective": f"{_NLI[minority]}_over_{_NLI[majority]}", "text": r["text"],
             "answer": _NLI[minority], "contrast": _NLI[majority]}
            for r in build if r["_major"] == majority and r["_dist"][minority] >= 0.2
        ]
        found.append((len(lines), f"{_NLI[minority]}_over_{_NLI[majority]}", note, lines[:PER_PERSPECTIVE]))
    found.sort(key=lambda f: -f[0])
    chosen = [f for f in found if f[0] >= 10][:k]  # a pattern needs >= 10 examples to be a perspective
    strip = lambda rs: [{k2: v for k2, v in r.items() if not k2.startswith("_")} for r in rs]  # noqa: E731
    return Task(f"chaosnli-{part}" if part != "snli" else "chaosnli", NLI_TEMPLATE, strip(cal), strip(ev),
                {name: note for _, name, note, _ in chosen}, [x for *_, lines in chosen for x in lines], "answer",
                "label-vote patterns: 'X_over_Y' = items where >= 20 of 100 annotators answered X while the "
                "majority answered Y (answer recipe: X vs. Y), from 500 held-out items; patterns with fewer "
                "than 10 such items are dropped", [path])


# -------------------------------------------------------------------- liar
LIAR_TEMPLATE = 'Statement by {speaker}: "{statement}"\nIs this statement true or false? Answer:'
_LIAR_TRUE = {"true", "mostly-true", "half-true"}
_LIAR_FALSE = {"barely-true", "false", "pants-fire"}
LIAR_PERSONAS = {
    "fact_checker": "As a professional fact-checker, I check every number against official records.",
    "democrat": "As a loyal Democrat, I believe claims that match my party's positions.",
    "republican": "As a loyal Republican, I believe claims that match my party's positions.",
    "sceptic": "As a sceptic, I assume politicians exaggerate and mislead.",
    "trusting_voter": "As a trusting voter, I take politicians at their word.",
    "statistician": "As a statistician, I ask whether the numbers are plausible.",
}


def _liar_rows(path: str, prefix: str) -> list[Item]:
    out = []
    with open(path, encoding="utf-8") as handle:
        for i, cols in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(cols) < 5 or cols[1] not in _LIAR_TRUE | _LIAR_FALSE:
                continue
            speaker = cols[4].replace("-", " ").strip() or "a politician"
            out.append({"id": f"{prefix}-{cols[0] or i}", "options": ["true", "false"],
                        "label": "true" if cols[1] in _LIAR_TRUE else "false",
                        "text": LIAR_TEMPLATE.format(speaker=speaker, statement=cols[2].strip())})
    return out


def _liar(data: str, seed: int, k: int) -> Task:
    paths = [os.path.join(data, "liar", f"{s}.tsv") for s in ("train", "valid", "test")]
    train, valid, test = (_shuffled(_liar_rows(p, s), seed) for p, s in zip(paths, ("train", "valid", "test")))
    personas = _take(LIAR_PERSONAS, k)
    return Task("liar", LIAR_TEMPLATE, valid, test, personas, _personas([x["text"] for x in train], personas),
                "feedback", "hand-written reader personas (feedback recipe) on 50 training statements; "
                "binarised: true = {true, mostly-true, half-true}, false = {barely-true, false, pants-fire}",
                paths)


# -------------------------------------------------------------- truthfulqa
TQA_TEMPLATE = "Q: {question}\nA:"
TQA_PERSONAS = {
    "scientist": "As a scientist, I answer only with what the evidence supports.",
    "folk_wisdom": "I trust what my grandmother and popular sayings tell me.",
    "literal_lawyer": "As a lawyer, I answer exactly and literally what is asked.",
    "myth_buster": "As a sceptic, I doubt popular beliefs and myths.",
    "conspiracist": "I believe official stories usually hide the truth.",
    "encyclopedia": "I answer like an encyclopedia, with established facts only.",
}


def _truthfulqa(data: str, seed: int, k: int) -> Task:
    path = os.path.join(data, "truthfulqa", "mc_task.json")
    with open(path, encoding="utf-8") as handle:
        rows = json.load(handle)
    items = []
    for i, r in enumerate(rows):
        targets = r["mc1_targets"]
        options = _shuffled([o.strip() for o in targets], seed + i)  # the correct answer is always first
        if len(set(options)) != len(options):
            continue
        label = next(o.strip() for o, v in targets.items() if v == 1)
        items.append({"id": f"tqa-{i}", "text": TQA_TEMPLATE.format(question=r["question"].strip()),
                      "options": options, "label": label})
    pool = _shuffled(items, seed)
    personas = _take(TQA_PERSONAS, k)
    return Task("truthfulqa", TQA_TEMPLATE, pool[67:317], pool[317:], personas,
                _personas([x["text"] for x in pool[:67]], personas), "feedback",
                "hand-written answerer personas (feedback recipe) on 50 held-out questions; MC1: options are "
                "the MC1 answers (order shuffled), each scored by its full log-probability", [path])


# --------------------------------------------------------- globalopinionqa
GOQA_TEMPLATE = "Survey of people in {country}.\n{question}"
_LETTERS = "ABCDEFGHIJ"


def _goqa(data: str, seed: int, k: int) -> Task:
    path = os.path.join(data, "globalopinionqa", "distributional_test_globalopinionqa_small.json")
    with open(path, encoding="utf-8") as handle:
        rows = json.load(handle)
    by_question: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_question.setdefault(r["question"], []).append(r)
    questions = _shuffled(sorted(by_question), seed)
    cut1, cut2 = int(0.4 * len(questions)), int(0.6 * len(questions))
    position = {q: i for i, q in enumerate(questions)}  # a record's 'group': one question, asked of every country

    def records(qs: list[str]) -> list[Item]:
        out = []
        for q in qs:
            for r in by_question[q]:
                letters = list(_LETTERS[: len(r["options"])])
                gold = [float(x) for x in r["gold_distribution"]]
                total = sum(gold) or 1.0
                out.append({"id": f"goqa-{r['id']}", "options": letters, "group": f"q{position[q]}",
                            "text": GOQA_TEMPLATE.format(country=r["attribute"], question=r["question"].strip()),
                            "label": letters[max(range(len(gold)), key=gold.__getitem__)],
                            "human_probs": {a: g / total for a, g in zip(letters, gold)}})
        return _shuffled(out, seed)

    build_q = questions[:cut1]
    counts = Counter(r["attribute"] for q in build_q for r in by_question[q])
    names = [c for c, _ in counts.most_common(k)]
    annotations = []
    for country in names:
        lines = []
        for q in build_q:
            group = by_question[q]
            mine = [r for r in group if r["attribute"] == country]
            if not mine:
                continue
            gold = mine[0]["gold_distribution"]
            order = sorted(range(len(gold)), key=lambda j: -gold[j])
            others = [r["gold_distribution"] for r in group if r["attribute"] != country]
            pooled = [sum(col) for col in zip(*others)] if others else []
            contrast = max(range(len(pooled)), key=pooled.__getitem__) if pooled else order[1]
            if contrast == order[0]:
                contrast = order[1]
            lines.append({"perspective": country, "text": q.strip(), "answer": _LETTERS[order[0]],
                          "contrast": _LETTERS[contrast]})
        annotations += lines[:PER_PERSPECTIVE]
    notes = {c: f"Answer as a typical person from {c} would." for c in names}
    return Task("globalopinionqa", GOQA_TEMPLATE, records(questions[cut1:cut2]), records(questions[cut2:]), notes,
                annotations, "answer",
                "countries with the most rows among 40% of the questions (answer recipe: the country's modal "
                "option vs. the other countries' pooled modal option, or its own runner-up); calibration and "
                "evaluation on other questions (20% / 40%), every country", [path])


DATASETS: dict[str, Callable[[str, int, int], Task]] = {
    "sst2": _sst2,
    "hatexplain": _hatexplain,
    "chaosnli": _chaosnli,
    "chaosnli-mnli": lambda data, seed, k: _chaosnli(data, seed, k, "mnli_m"),
    "liar": _liar,
    "truthfulqa": _truthfulqa,
    "globalopinionqa": _goqa,
}


def load_task(
    name: str, data_dir: str, n: int, n_cal: int, k: int = 6, seed: int = 0, per_perspective: int = PER_PERSPECTIVE
) -> Task:
    """Load ``name``; keep the first ``n`` evaluated and ``n_cal`` calibration records and the
    first ``per_perspective`` (<= 50) annotated examples of each perspective."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{data_dir}: no data directory (pass --data-dir)")
    task = DATASETS[name](data_dir, seed, k)
    if len(task.eval) < n:
        raise ValueError(f"{name}: only {len(task.eval)} items can be evaluated, asked for --n {n}")
    task.cal, task.eval = task.cal[:n_cal], task.eval[:n]
    seen: Counter[str] = Counter()
    kept = []
    for line in task.annotations:
        seen[line["perspective"]] += 1
        if seen[line["perspective"]] <= min(per_perspective, PER_PERSPECTIVE):
            kept.append(line)
    task.annotations = kept
    ids = {x["id"] for x in task.eval}
    if ids & {x["id"] for x in task.cal}:
        raise ValueError(f"{name}: calibration and evaluated items overlap")
    built_from = {a["text"] for a in task.annotations}
    leaked = [x["id"] for x in task.cal + task.eval if any(t in x["text"] for t in built_from)]
    if leaked:
        raise ValueError(f"{name}: {len(leaked)} calibration/evaluated items were used to build vectors: {leaked[:3]}")
    return task
