"""A probe for ``steerunc vectors check`` from real posts: HateXplain's vector-building part.

    python benchmarks/hatexplain_probe.py ANNOTATIONS.jsonl -o probe.jsonl [--n 60] [--seed 0]

ANNOTATIONS is the ``annotations.jsonl`` that ``bench_quality.py --dataset hatexplain``
writes beside its results (the posts it builds its vectors from, never its
calibration or evaluated items). The distinct posts are shuffled with ``--seed``
and the first ``--n`` are asked the question of ``examples/moderation.jsonl``
through the chat template, with the options Yes and No. The records carry no
label: a check needs none. docs/perspectives.md uses it.
"""

from __future__ import annotations

import argparse
import json
import random
import re

QUESTION = 'Comment: "{post}"\nIs this comment offensive? Answer Yes or No.\nAnswer:'
POST = re.compile(r'^Post: "(.*)"\n', re.S)


def probe(annotations: str, n: int, seed: int) -> list[dict[str, object]]:
    posts: list[str] = []
    with open(annotations, encoding="utf-8") as handle:
        for line in handle:
            found = POST.match(json.loads(line)["text"])
            if found and found.group(1) not in posts:
                posts.append(found.group(1))
    random.Random(seed).shuffle(posts)
    return [{"id": f"hx-{i + 1:02d}", "text": QUESTION.format(post=post), "options": ["Yes", "No"], "chat": True}
            for i, post in enumerate(posts[:n])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = probe(args.annotations, args.n, args.seed)
    with open(args.output, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} records to {args.output}")


if __name__ == "__main__":
    main()
