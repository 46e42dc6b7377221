"""Shared fixtures: offline, a private cache, one tiny random model per session.

``STEERUNC_TEST_DEVICE=cuda`` runs the unit tests on a GPU: the tiny model
fixtures (and :func:`load_tiny`) load there, in float32 unless a test asks for
bfloat16. The default, and CI, is ``cpu``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MODERATION = "Comment: \"{}\"\nIs this comment offensive? Answer Yes or No.\nAnswer:"

#: where the unit tests run the tiny model: ``cpu`` (default) or ``cuda``
DEVICE = os.environ.get("STEERUNC_TEST_DEVICE", "cpu")


def load_tiny(dtype: str = "float32", path: str = "tiny-random") -> Any:
    """The tiny random model (or a directory holding a copy) on the test device, in ``dtype``."""
    from steerunc.scoring.model import load_model

    return load_model(path, device=DEVICE, dtype=dtype)


def tiny_qwen2(folder: Any) -> Any:
    """The default model's architecture (Qwen2: biased projections, no q/k norms), tiny and random,
    with the tiny tokenizer, saved under ``folder`` and loaded on the test device."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from steerunc.scoring.tiny import tiny_random_model

    _, tokenizer = tiny_random_model()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder / "qwen")
    tokenizer.save_pretrained(folder / "qwen")
    return load_tiny(path=str(folder / "qwen"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's cache, except the marked integration
    tests, which reuse the converted default model if it is there."""
    if "STEERUNC_TEST_CACHE" in os.environ:
        os.environ["STEERUNC_CACHE_DIR"] = os.environ["STEERUNC_TEST_CACHE"]
    else:
        os.environ["STEERUNC_CACHE_DIR"] = str(tmp_path_factory.mktemp("steerunc-cache"))
    yield


@pytest.fixture(scope="session")
def device() -> str:
    """The device the unit tests run the tiny model on (``STEERUNC_TEST_DEVICE``, default cpu)."""
    return DEVICE


@pytest.fixture(scope="session")
def tiny() -> Any:
    return load_tiny()


@pytest.fixture(scope="session")
def tiny_vectors(tiny: Any) -> Any:
    from steerunc.scoring.vectors_default import default_vectors

    return default_vectors(tiny)


@pytest.fixture(scope="session")
def two(tiny: Any) -> Any:
    """Two perspectives for the tiny model, built from two pairs (scoring with them stays fast)."""
    from steerunc.scoring.vectors import Pair, build_vectors

    pairs = [Pair("kind", "I am kind.\nComment: hi", "Comment: hi"), Pair("harsh", "I am harsh.\nComment: hi", "Comment: hi")]
    return build_vectors(tiny, pairs, layer=1)


@pytest.fixture
def loads(tiny: Any, two: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``load_model`` hands out the session's tiny model, scored under :func:`two`'s perspectives
    by default; the list records every load (a command that must not load the model leaves it empty)."""
    import steerunc.scoring.model
    import steerunc.scoring.scorer

    calls: list[str] = []

    def load(name: str, device: str = "auto", dtype: str = "auto") -> Any:
        calls.append(name)
        return tiny

    monkeypatch.setattr(steerunc.scoring.model, "load_model", load)
    monkeypatch.setattr(steerunc.scoring.scorer, "default_vectors", lambda model, layer=None: two)
    return calls
