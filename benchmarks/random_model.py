"""A random-weight model directory of a real model's shape, for timing where the weights cannot go.

    python benchmarks/random_model.py SHAPE_DIR OUT_DIR [--device cuda] [--dtype bfloat16]

``SHAPE_DIR`` holds a converted model's ``config.json`` and its tokenizer files
(``tokenizer.json`` may be xz-compressed as ``tokenizer.json.xz``), say copied
from ``~/.cache/steerunc/models/qwen2.5-coder-1.5b-instruct-q4-k-m/`` without
``model.safetensors``. ``OUT_DIR`` becomes a model directory that
``steerunc score --model OUT_DIR`` and ``bench_throughput.py --model OUT_DIR``
load: the same architecture, sizes and tokenizer, weights drawn at random
(seed 0). Speed does not depend on weight values, so a GPU machine that cannot
receive the 3 GB of real weights can still time the real shape.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import sys

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "generation_config.json")


def build(shape_dir: str, out_dir: str, device: str = "cpu", dtype: str = "bfloat16", seed: int = 0) -> str:
    """Write a random-weight copy of ``shape_dir``'s model to ``out_dir``; returns ``out_dir``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(shape_dir)
    config.architectures = config.architectures or [type(config).__name__.replace("Config", "ForCausalLM")]
    if hasattr(config, "quantization_config"):  # a GGUF conversion's leftover: the copy is plain weights
        del config.quantization_config
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        source = os.path.join(shape_dir, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(out_dir, name))
        elif os.path.isfile(source + ".xz"):
            with lzma.open(source + ".xz") as packed, open(os.path.join(out_dir, name), "wb") as plain:
                shutil.copyfileobj(packed, plain)
    if not os.path.isfile(os.path.join(out_dir, "tokenizer.json")):
        raise SystemExit(f"{shape_dir}: no tokenizer.json or tokenizer.json.xz")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--device", default="cpu", help="where the weights are drawn (cuda is much faster)")
    parser.add_argument("--dtype", default="bfloat16", help="float32 or bfloat16 (default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build(args.shape_dir, args.out_dir, args.device, args.dtype, args.seed)
    print(f"wrote a random-weight model of {args.shape_dir}'s shape to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
