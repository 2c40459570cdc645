"""Choose, export, guard and load the backend an Encoder runs on (CPU only; GPUs stay torch).

Preference order, fastest first (benchmarks/results/encode_backends.md): OpenVINO int8, OpenVINO
bf16 (only on CPUs with AMX or AVX512-bf16), OpenVINO float32, then ONNX Runtime int8 and
float32 when OpenVINO is not installed, then torch. Each variant is exported once, checked by
the guard once (both cached), and the first one that passes is used - with an auto dtype, only
when it is also faster than the torch path on this machine (timed once and cached, see
:mod:`kalm_rag.backends.speed`). With an auto dtype that torch path is guarded as well: bf16
(on CPUs with AMX or AVX512-bf16) only when it passes the same guard, else float32. Nothing
here ever makes ``backend="auto"`` fail: a missing library, a failed export or a refused variant
moves on to the next option, and torch is always last.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kalm_rag.backends import cache
from kalm_rag.backends.base import Runner, padded_batches
from kalm_rag.backends.guard import GuardPolicy, GuardResult, GuardTexts, bundled_texts, compare, user_texts
from kalm_rag.backends.speed import SpeedResult, best_time, read_speed, speed_key, write_speed
from kalm_rag.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder

log = logging.getLogger("kalm_rag.backends")
_EXTRA = {"openvino": "openvino", "onnx": "onnx"}
_LIBRARY = {"openvino": "openvino", "onnx": "onnxruntime"}
_QUANTIZER = {"openvino": "nncf", "onnx": "onnx"}


@dataclass
class Choice:
    """What the Encoder runs on, and why (``runner`` None means the torch model)."""

    backend: str
    precision: str
    reason: str
    runner: Runner | None = None
    guard: GuardResult | None = None
    export: Path | None = None
    refused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.backend} {self.precision}"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def candidates(backend: str, precision: str | None) -> list[tuple[str, str]]:
    """(backend, precision) options to try in order; an empty list means torch.

    ``precision=None`` (auto) tries int8 only on CPUs with int8 dot-product instructions (VNNI,
    AMX): without them int8 kernels are no faster than float32 (measured: OpenVINO int8 ran at
    0.95x its float32 on an AVX2-only EPYC), so exporting and guarding int8 would only cost time.
    bf16 is tried only on CPUs with AMX or AVX512-bf16. A refused int8 (auto or asked for)
    falls back to the best passing float option.
    """
    from kalm_rag.runtime import cpu_has_fast_bf16

    if backend == "auto" and precision == "bfloat16" and not cpu_has_fast_bf16():
        return []  # no bf16 hardware: keep the torch path the user asked for
    if backend == "auto":
        found = [b for b in ("openvino", "onnx") if installed(_LIBRARY[b])]
        names = found[:1]  # OpenVINO, where installed, beats ONNX Runtime at every precision
    else:
        names = [backend]
    floats = ["bfloat16", "float32"] if cpu_has_fast_bf16() else ["float32"]
    if precision is None:
        order = (["int8"] if cpu_has_fast_int8() else []) + floats
    elif precision == "int8":
        order = ["int8", *floats]
    else:
        order = [precision]
    out: list[tuple[str, str]] = []
    for name in names:
        if name == "onnx" and precision == "bfloat16":
            raise ConfigError("the onnx backend runs float32 or int8; use backend='openvino' for bf16")
        out += [(name, p) for p in order if not (name == "onnx" and p == "bfloat16")]
    return out


def choose(
    encoder: Encoder,
    *,
    backend: str,
    precision: str | None,
    num_threads: int,
    calibration_texts: Sequence[str] | None = None,
    policy: GuardPolicy | None = None,
) -> Choice:
    """Export, guard and load the first passing option; ``Choice(backend="torch")`` if none."""
    if backend != "auto" and not installed(_LIBRARY[backend]):
        raise MissingDependencyError(
            f"backend={backend!r} needs {_LIBRARY[backend]!r}; install it with "
            f"`pip install 'kalm-rag[{_EXTRA[backend]}]'`"
        )
    options = candidates(backend, precision)
    policy = policy or GuardPolicy()
    auto_dtype = backend == "auto" and precision is None
    # an auto dtype (or a refused int8) falls back to torch in bf16 only where bf16 passes the
    # guard; without exports to try, a session (weights hash, reference) is only worth it for that
    guard_torch = precision in (None, "int8")
    session: _Session | None = None
    if options or (guard_torch and encoder.source_folder is not None and _auto_torch_is_bf16(encoder)):
        texts = user_texts(calibration_texts) if calibration_texts is not None else bundled_texts()
        session = _Session(encoder, texts, policy, num_threads)
    refused: list[str] = []

    def torch_precision() -> str:
        return session.torch_fallback(refused) if guard_torch and session is not None else ""

    if not options or session is None:
        why = "OpenVINO and ONNX Runtime are not installed" if backend == "auto" else "nothing to try"
        if backend == "auto" and precision == "bfloat16":
            why = "this CPU has no fast bf16"
        fallback = torch_precision()
        return Choice("torch", fallback, _with_refused(why, refused), refused=refused)
    for name, prec in options:
        try:
            runner, result, folder = session.try_option(name, prec)
        except MissingDependencyError as exc:
            refused.append(f"{name} {prec}: {exc}")
            continue
        except Exception as exc:  # a failed export must never break loading: try the next option
            log.warning("kalm_rag: %s %s could not be exported or run (%s: %s)", name, prec,
                        type(exc).__name__, exc)  # fmt: skip
            refused.append(f"{name} {prec}: failed ({type(exc).__name__})")
            continue
        if result.passed:
            why = f"passed the guard: {result.reason()}"
            if auto_dtype and policy.min_speedup > 0:
                fallback = torch_precision()
                speed = session.speed(name, prec, runner, folder, fallback)
                timing = speed.describe(f"{name} {prec}", fallback)
                if speed.speedup < policy.min_speedup:  # a faster kernel on paper, not here
                    why = "torch is the fastest passing option on this CPU: " + timing
                    choice = Choice("torch", fallback, _with_refused(why, refused), refused=refused)
                    refused.append(f"{name} {prec}: slower here, {timing} (need {policy.min_speedup}x)")
                    return choice
                why += f"; {timing}"
            return Choice(name, prec, _with_refused(why, refused), runner, result, folder, refused)
        message = f"{name} {prec} refused by the accuracy guard: {result.reason()}"
        if precision == prec:  # asked for by name: say so loudly
            warnings.warn(message + "; falling back to the next option", UserWarning, stacklevel=4)
        refused.append(f"{name} {prec}: {result.reason()}")
    fallback = torch_precision()
    return Choice("torch", fallback, "no exported option passed: " + "; ".join(refused), refused=refused)


def _auto_torch_is_bf16(encoder: Encoder) -> bool:
    import torch

    from kalm_rag.runtime import pick_dtype

    return pick_dtype(None, encoder.device) == torch.bfloat16


def _with_refused(why: str, refused: list[str]) -> str:
    return f"{why}; refused before it: {'; '.join(refused)}" if refused else why


class _Session:
    """One choice: the float32 reference is computed at most once and only when needed."""

    def __init__(self, encoder: Encoder, texts: GuardTexts, policy: GuardPolicy, num_threads: int) -> None:
        from kalm_rag.backends.cache import source_hash

        self.encoder = encoder
        self.texts = texts
        self.policy = policy
        self.num_threads = num_threads
        if encoder.source_folder is None:
            raise ConfigError("exported backends need an Encoder loaded from a folder (from_pretrained)")
        settings = {"is_causal": encoder.config.is_causal}
        self.source = source_hash(encoder.source_folder, settings)
        self._reference: tuple[Any, Any] | None = None
        self._torch_precision: str | None = None

    def try_option(self, backend: str, precision: str) -> tuple[Runner, GuardResult, Path]:
        module = _module(backend)
        variant = "int8" if precision == "int8" else "float32"
        folder = self._export(backend, variant)
        files = cache.read_manifest(folder)
        assert files is not None
        path = folder / (module.INT8_FILE if variant == "int8" else module.FLOAT_FILE)
        runner: Runner = (module.OpenVINORunner if backend == "openvino" else module.OnnxRunner)(
            path, precision=precision, num_threads=self.num_threads
        )
        key = f"{precision}:{self.texts.source}:{self.texts.key}"
        result = cache.read_guard(folder, key)
        if result is None:
            start = time.perf_counter()
            result = compare(self.reference(), self._embed(runner), texts=self.texts, policy=self.policy)
            cache.write_guard(folder, key, result)
            log.info("kalm_rag: guard for %s %s took %.1fs", backend, precision, time.perf_counter() - start)
        return runner, result.under(self.policy), folder

    def speed(
        self, backend: str, precision: str, runner: Runner, folder: Path, torch_precision: str
    ) -> SpeedResult:
        """``runner`` against the torch path auto would fall back to (cached per CPU and threads)."""
        key = speed_key(precision, torch_precision, self.num_threads)
        result = read_speed(folder, key)
        if result is None:
            enc, documents = self.encoder, list(self.texts.documents)
            with self._torch_in(torch_precision), self._running(None):
                torch_s = best_time(lambda: enc.encode_document(documents, batch_size=16))
            with self._running(runner):
                option_s = best_time(lambda: enc.encode_document(documents, batch_size=16))
            result = SpeedResult(round(option_s, 4), round(torch_s, 4), len(documents))
            write_speed(folder, key, result)
            timing = result.describe(backend, torch_precision)
            log.info("kalm_rag: timed %s %s: %s", backend, precision, timing)
        return result

    def torch_fallback(self, refused: list[str]) -> str:
        """The torch dtype for an auto dtype: bf16 where the CPU has it and it passes the guard
        (verdict cached per model and texts like an export's), else float32. A refusal is added
        to ``refused`` once."""
        if self._torch_precision is None:
            self._torch_precision = self._guarded_torch_precision(refused)
        return self._torch_precision

    def _guarded_torch_precision(self, refused: list[str]) -> str:
        if _auto_torch_is_bf16(self.encoder):
            folder = cache.export_folder(self.encoder.name_or_path, self.source, "torch-bfloat16")
            key = f"bfloat16:{self.texts.source}:{self.texts.key}"
            result = cache.read_guard(folder, key)
            if result is None:
                with self._torch_in("bfloat16"):
                    candidate = self._embed(None)
                result = compare(self.reference(), candidate, texts=self.texts, policy=self.policy)
                folder.mkdir(parents=True, exist_ok=True)
                cache.write_guard(folder, key, result)
            result = result.under(self.policy)
            if result.passed:
                return "bfloat16"
            refused.append(f"torch bfloat16: {result.reason()}")
        return "float32"

    @contextlib.contextmanager
    def _torch_in(self, precision: str) -> Iterator[None]:
        """The encoder's torch model in ``precision`` inside (a copy: casting back would lose bits)."""
        import torch

        enc = self.encoder
        model = enc.model
        dtype = getattr(torch, precision)
        if dtype != model.dtype:
            import copy

            enc.model = copy.deepcopy(model).to(dtype)
        try:
            yield
        finally:
            enc.model = model

    def reference(self) -> tuple[Any, Any]:
        if self._reference is None:
            self._reference = self._embed(None)
        return self._reference

    def _embed(self, runner: Runner | None) -> tuple[Any, Any]:
        """Held-out queries and documents with their prompts, through ``runner`` (None: torch)."""
        import numpy as np

        enc = self.encoder
        with self._running(runner):
            queries = (
                enc.encode_query(list(self.texts.queries), batch_size=16)
                if self.texts.queries
                else np.zeros((0, enc.dim), dtype=np.float32)
            )
            documents = enc.encode_document(list(self.texts.documents), batch_size=16)
        return queries, documents

    @contextlib.contextmanager
    def _running(self, runner: Runner | None) -> Iterator[None]:
        """The encoder encodes through ``runner`` (None: torch) inside; its state is restored after."""
        enc = self.encoder
        previous, warned = enc.runner, enc._warned_truncation
        enc.runner = runner
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # long held-out documents are truncated on purpose
                yield
        finally:
            enc.runner, enc._warned_truncation = previous, warned

    def _export(self, backend: str, variant: str) -> Path:
        from kalm_rag._atomic import atomic_folder

        suffix = f"-{self.texts.source}-{self.texts.key}" if variant == "int8" else ""
        folder = cache.export_folder(self.encoder.name_or_path, self.source, f"{backend}-{variant}{suffix}")
        if cache.read_manifest(folder) is not None:
            return folder
        module = _module(backend)
        if variant == "int8" and not installed(_QUANTIZER[backend]):
            raise MissingDependencyError(f"int8 needs {_QUANTIZER[backend]!r} (extra {_EXTRA[backend]!r})")
        source = self._export(backend, "float32") if variant == "int8" else None
        log.warning(
            "kalm_rag: exporting %s to %s %s once (cached in %s)", self.encoder.name_or_path, backend,
            variant, folder.parent,
        )  # fmt: skip
        start = time.perf_counter()
        pad_id = int(self.encoder.tokenizer.pad_token_id)
        with atomic_folder(folder, kind="export") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes; the guard checks the traced graph
            if source is None:
                path = module.export(self.encoder.model, tmp, pad_id=pad_id)
            else:
                batches = padded_batches(self._calibration_ids(), pad_id, batch_size=1)
                quantize: Callable[..., Path] = module.quantize
                extra = {"vnni": cpu_has_fast_int8()} if backend == "onnx" else {}
                path = quantize(source / module.FLOAT_FILE, tmp, batches, **extra)
            manifest = {
                "format": cache.EXPORT_FORMAT, "backend": backend, "variant": variant,
                "model": self.encoder.name_or_path, "source_hash": self.source,
                "source_folder": str(self.encoder.source_folder), "files": _files(tmp),
                "main_file": path.name, f"{backend}_version": module.version(),
                "calibration": f"{self.texts.source}:{self.texts.key}" if variant == "int8" else None,
                "n_calibration_texts": len(self.texts.calibration) if variant == "int8" else 0,
                "seconds": round(time.perf_counter() - start, 1),
            }  # fmt: skip
            cache.write_manifest(tmp, manifest)
        return folder

    def _calibration_ids(self) -> list[list[int]]:
        """Calibration texts with the prompts they get in use (queries, then documents)."""
        enc = self.encoder
        texts = list(self.texts.calibration)
        if self.texts.source == "bundled":
            n_short = len(self.texts.calibration) // 2
            short = sorted(texts, key=len)[:n_short]  # the short half calibrates as queries
            prefixed = [enc.config.query_prefix() + t for t in short]
            prefixed += [enc.config.document_prefix() + t for t in texts if t not in set(short)]
        else:
            prefixed = [enc.config.document_prefix() + t for t in texts]
        ids, _ = enc._fast_tokenizer(prefixed)
        return ids


def _module(backend: str) -> Any:
    if backend == "openvino":
        from kalm_rag.backends import openvino

        return openvino
    from kalm_rag.backends import onnx

    return onnx


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


@functools.cache
def cpu_has_fast_int8() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-int8)."""
    from kalm_rag.runtime import cpuinfo_field

    return bool(set(cpuinfo_field("flags").split()) & {"avx512_vnni", "avx_vnni", "amx_int8"})
