"""Peak host memory and time of loading one model: ``python benchmarks/bench_load.py --model NAME [--dtype D]``.

Run one configuration per process (peak RSS is per process). Prints one JSON line:
wall seconds of ``load_model``, the process's peak resident memory (VmHWM) and
its resident memory after loading (VmRSS), the peak and final anonymous memory
(RssAnon, sampled every 20 ms: what is not the page cache of mmapped weight
files), all in MB, and the RSS before loading (python + torch + transformer_lens).

``--legacy`` loads the way steerunc did before loading lean: read the weights in
float32 on the host, then cast and move them (``bridge.to``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AnonPeak:
    """Samples RssAnon (memory that is not file-backed: not the mmapped weights) every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status_mb("RssAnon"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a built-in name or a model directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--legacy", action="store_true", help="load float32 on the host, then cast and move")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformer_lens  # noqa: F401  (imported before the baseline, as load_model does)

    from steerunc.scoring import model as model_module

    torch.set_num_threads(1)
    before = _status_mb("VmRSS")
    sampler = _AnonPeak()
    start = time.perf_counter()
    if args.legacy:
        original = model_module._load_dir

        def float32_first(path: str, device: torch.device, dtype: torch.dtype) -> tuple[object, object]:
            return original(path, torch.device("cpu"), torch.float32)  # _boot then casts and moves

        model_module._load_dir = float32_first  # type: ignore[assignment]
    loaded = model_module.load_model(args.model, device=args.device, dtype=args.dtype)
    seconds = time.perf_counter() - start
    anon_peak = sampler.stop()
    print(json.dumps({
        "model": args.model, "model_id": loaded.model_id, "device": str(loaded.device), "dtype": str(loaded.dtype),
        "legacy": args.legacy, "load_s": round(seconds, 2), "rss_before_mb": round(before),
        "peak_rss_mb": round(_status_mb("VmHWM")), "rss_after_mb": round(_status_mb("VmRSS")),
        "peak_anon_mb": round(anon_peak), "anon_after_mb": round(_status_mb("RssAnon")),
        "parameters": loaded.hf_model.num_parameters(),
        "param_dtypes": sorted({str(p.dtype) for p in loaded.hf_model.parameters()}),
    }))


if __name__ == "__main__":
    main()
