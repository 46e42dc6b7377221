"""Fast checks of the shipped data files (no torch, no model)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PERSPECTIVES = ROOT / "steerunc" / "data" / "perspectives.jsonl"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.jsonl") if p.name != "bad_input.jsonl")


def _load(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert all(isinstance(r, dict) for r in rows), path
    return rows


def test_perspectives() -> None:
    rows = _load(PERSPECTIVES)
    for i, row in enumerate(rows, start=1):
        for key in ("perspective", "positive", "negative"):
            assert isinstance(row.get(key), str) and row[key].strip(), (i, key)
        assert row["positive"] != row["negative"], i
        assert row["positive"].endswith(row["negative"]), i
    counts = Counter(r["perspective"] for r in rows)
    assert len(counts) >= 5, counts  # legal_expert was removed (docs/perspectives.md)
    assert min(counts.values()) >= 20, counts


def test_examples_exist() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_file(path: Path) -> None:
    rows = _load(path)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), path
    for row in rows:
        assert isinstance(row.get("text"), str) and row["text"].strip(), row
        options = row.get("options")
        if "label" in row:
            assert options and row["label"] in options, row
        if "human_probs" in row:
            probs = row["human_probs"]
            assert options and set(probs) <= set(options), row
            assert abs(sum(probs.values()) - 1.0) <= 1e-6, row
