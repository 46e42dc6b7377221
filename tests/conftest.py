"""Shared fixtures: offline, a private cache, one tiny random model per session."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MODERATION = "Comment: \"{}\"\nIs this comment offensive? Answer Yes or No.\nAnswer:"


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
def tiny() -> Any:
    from steerunc.model import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def tiny_vectors(tiny: Any) -> Any:
    from steerunc.vectors import default_vectors

    return default_vectors(tiny)
