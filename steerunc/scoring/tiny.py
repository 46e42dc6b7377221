"""A tiny deterministic random-initialised Gemma 3 with an offline byte-level tokenizer.

For tests and smoke runs: 4 layers, width 64, ~300 tokens, built in a fraction
of a second, identical on every machine (seeded). A handful of common answer
words (" Yes", " No", " A".." E") are single tokens, others (" Unsure") are
split, so both option paths are exercised.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import tempfile
from typing import Any

import torch

__all__ = ["tiny_random_model", "TINY_WORDS"]

#: words that get their own token (with a leading space, as answers follow "Answer:")
TINY_WORDS = ("Yes", "No", "A", "B", "C", "D", "E", "the", "is", "this", "comment", "Answer")
_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")


#: user turns only; the answer is read after the opening of the model turn
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}{{ '\\n' }}{{ m['content'] }}"
    "<end_of_turn>{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model{{ '\\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _tokenizer_dir() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab: dict[str, int] = {s: i for i, s in enumerate(_SPECIALS)}
    for ch in sorted(alphabet):
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        piece = "Ġ"
        for ch in word:
            merged = piece + ch
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((piece, ch))
            piece = merged
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    # a chat template in Gemma's shape, so records that ask for one ("chat": true) run on this model too
    fast.chat_template = CHAT_TEMPLATE
    return _saved(fast)


def _saved(fast: Any) -> str:
    """Save the tokenizer once into the cache (``<cache>/tiny-tokenizer/<digest of its files>``) and
    return that folder: later loads find it, and nothing is left behind per load. Where the cache
    cannot be written, a temporary folder removed when the process exits."""
    from steerunc.scoring.model import cache_dir

    with tempfile.TemporaryDirectory(prefix="steerunc-tiny-tokenizer-") as tmp:
        fast.save_pretrained(tmp)
        digest = hashlib.sha256()
        for name in sorted(os.listdir(tmp)):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(tmp, name), "rb") as handle:
                digest.update(handle.read())
        folder = os.path.join(cache_dir(), "tiny-tokenizer", digest.hexdigest()[:16])
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            return folder
        try:
            os.makedirs(os.path.dirname(folder), exist_ok=True)
            staging = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".staging-")
            os.chmod(staging, 0o755)
        except OSError:  # no writable cache: a temporary folder for this process only
            fallback = tempfile.mkdtemp(prefix="steerunc-tiny-tokenizer-")
            atexit.register(shutil.rmtree, fallback, ignore_errors=True)
            fast.save_pretrained(fallback)
            return fallback
        for name in os.listdir(tmp):
            shutil.copy2(os.path.join(tmp, name), staging)
        try:
            os.replace(staging, folder)  # atomic; another process may have won the race
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return folder


def tiny_random_model(seed: int = 0) -> tuple[Any, Any]:
    """Return ``(hf_model, tokenizer)``; the tokenizer comes from ``from_pretrained``
    (TransformerBridge needs its ``name_or_path``)."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir())
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        architectures=["Gemma3ForCausalLM"],
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    # random init gives a near-uniform next-token distribution; widen the
    # unembedding so the tiny model has opinions worth disagreeing about
    embedding: Any = model.get_input_embeddings()
    with torch.no_grad():
        embedding.weight.mul_(8.0)
    model.eval()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return model, tokenizer
