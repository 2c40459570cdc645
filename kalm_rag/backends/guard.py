"""The accuracy guard: a reduced-precision model is used only if it retrieves like float32.

Before an int8 or bf16 variant (and, as a conversion check, a float32 export) is used, it
embeds held-out texts that calibration never saw, next to the float32 torch model, and must
keep at least ``min_agreement`` of the top-10 neighbours (queries against documents) and
``min_cosine`` between its vector and the float32 vector of every text. The metrics are saved
with the export; pass or fail is decided against the thresholds in force at load time.

Texts: the bundled sample (``kalm_rag/data/calibration.jsonl``: 480 real texts from the
training data, short queries in 12 languages and English documents, half for calibration and
half held out), or the user's own texts, split in two by a seeded shuffle.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import ConfigError, InvalidInputError

FloatArray = npt.NDArray[np.float32]
TOP_K = 10
#: Most user texts used for calibration and for the guard (each); more only costs time.
MAX_USER_TEXTS = 256


@dataclass(frozen=True)
class GuardPolicy:
    """Thresholds a variant must meet versus float32 (the issue's defaults: 0.99 and 0.99)."""

    min_agreement: float = 0.99
    min_cosine: float = 0.99
    #: backend="auto" with an auto dtype only: the option must encode documents at least this many
    #: times as fast as the torch path it replaces, timed once on this machine (0: no timing)
    min_speedup: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_cosine"):
            value = getattr(self, name)
            # above 1 nothing can pass: a way to force the torch path (and to test refusals)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 2.0:
                raise ConfigError(f"guard {name} must be a number in [-1, 2], got {value!r}")
        speedup = self.min_speedup
        if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not 0.0 <= speedup <= 1000.0:
            raise ConfigError(f"guard min_speedup must be a number in [0, 1000], got {speedup!r}")


@dataclass(frozen=True)
class GuardTexts:
    """Held-out queries and documents (``queries`` empty: every text is a query against the rest)."""

    queries: tuple[str, ...]
    documents: tuple[str, ...]
    calibration: tuple[str, ...]
    source: str

    @property
    def key(self) -> str:
        """Digest of calibration + held-out texts: part of the int8 export's and verdict's key."""
        digest = hashlib.sha256()
        for part in (self.calibration, self.queries, self.documents):
            digest.update(json.dumps(part, ensure_ascii=False).encode())
        return digest.hexdigest()[:12]


@dataclass(frozen=True)
class GuardResult:
    """Metrics of one variant versus float32, and the verdict under ``policy``."""

    top10_agreement: float
    min_cosine: float
    mean_cosine: float
    n_queries: int
    n_documents: int
    texts: str
    policy: GuardPolicy

    @property
    def passed(self) -> bool:
        return self.top10_agreement >= self.policy.min_agreement and self.min_cosine >= self.policy.min_cosine

    def under(self, policy: GuardPolicy) -> GuardResult:
        return GuardResult(**{**self._metrics(), "policy": policy})

    def reason(self) -> str:
        """One phrase: the measured numbers against the thresholds."""
        p = self.policy
        agreement = f"top-{TOP_K} agreement {self.top10_agreement:.4f} (need {p.min_agreement})"
        cosine = f"min cosine {self.min_cosine:.5f} (need {p.min_cosine})"
        return f"{agreement}, {cosine} on {self.n_queries + self.n_documents} held-out texts"

    def _metrics(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("policy")
        return data

    def to_dict(self) -> dict[str, Any]:
        return {**self._metrics(), "policy": asdict(self.policy), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardResult:
        values = {k: v for k, v in data.items() if k not in ("passed", "policy")}
        return cls(**values, policy=GuardPolicy(**data.get("policy", {})))


def bundled_texts() -> GuardTexts:
    """The packaged sample: calibration half, and held-out short queries against documents."""
    path = resources.files("kalm_rag") / "data" / "calibration.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    held = [r for r in rows if r["split"] == "heldout"]
    return GuardTexts(
        queries=tuple(r["text"] for r in held if r["kind"] == "query"),
        documents=tuple(r["text"] for r in held if r["kind"] == "document"),
        calibration=tuple(r["text"] for r in rows if r["split"] == "calibration"),
        source="bundled",
    )


def user_texts(texts: Sequence[str], *, seed: int = 0) -> GuardTexts:
    """The user's own texts: a seeded half calibrates, the other half is held out for the guard."""
    if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts):
        raise InvalidInputError("calibration_texts must be a list of non-empty strings")
    unique = list(dict.fromkeys(texts))
    if len(unique) < 2 * (TOP_K + 1):
        raise InvalidInputError(
            f"calibration_texts needs at least {2 * (TOP_K + 1)} distinct texts (half of them are held "
            f"out for the accuracy guard), got {len(unique)}"
        )
    random.Random(seed).shuffle(unique)
    half = min(len(unique) // 2, MAX_USER_TEXTS)
    return GuardTexts(
        queries=(), documents=tuple(unique[half : 2 * half]), calibration=tuple(unique[:half]), source="user"
    )


def compare(
    reference: tuple[FloatArray, FloatArray],
    candidate: tuple[FloatArray, FloatArray],
    *,
    texts: GuardTexts,
    policy: GuardPolicy,
) -> GuardResult:
    """Top-10 agreement and per-text cosine of ``candidate`` (queries, documents) vs ``reference``."""
    ref_q, ref_d = (_unit(x) for x in reference)
    cand_q, cand_d = (_unit(x) for x in candidate)
    cos = np.concatenate([(ref_q * cand_q).sum(axis=1), (ref_d * cand_d).sum(axis=1)])
    if len(ref_q):
        agreement = _agreement(ref_q @ ref_d.T, cand_q @ cand_d.T)
    else:  # every text against all the others
        ref_s, cand_s = ref_d @ ref_d.T, cand_d @ cand_d.T
        np.fill_diagonal(ref_s, -np.inf)
        np.fill_diagonal(cand_s, -np.inf)
        agreement = _agreement(ref_s, cand_s)
    return GuardResult(
        top10_agreement=round(agreement, 6),
        min_cosine=round(float(cos.min()), 6),
        mean_cosine=round(float(cos.mean()), 6),
        n_queries=len(ref_q),
        n_documents=len(ref_d),
        texts=f"{texts.source}:{texts.key}",
        policy=policy,
    )


def _agreement(reference: FloatArray, candidate: FloatArray) -> float:
    """Mean share of the reference top-k (by score) that the candidate's top-k also holds."""
    k = min(TOP_K, reference.shape[1] - (0 if np.isfinite(reference).all() else 1))
    ref_top = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    cand_top = np.argsort(-candidate, axis=1, kind="stable")[:, :k]
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ref_top, cand_top, strict=True)]
    return float(np.mean(overlap) / k)


def _unit(x: FloatArray) -> FloatArray:
    x = np.asarray(x, dtype=np.float32)
    out: FloatArray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out
