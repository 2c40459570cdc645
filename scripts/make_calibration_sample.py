"""Build kalm_rag/data/calibration.jsonl: real multilingual texts for int8 calibration and the guard.

    python scripts/make_calibration_sample.py [--train ../shared/data/train]

Seeded and reproducible. Only TRAINING files are read (never dev or eval data). Each line is
``{"text", "kind", "lang", "split"}``: ``kind`` is "query" (short texts in many languages) or
"document" (English descriptions and man-page sections); ``split`` is "calibration" (int8
activation ranges) or "heldout" (the accuracy guard's texts, never seen by calibration).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# per split: (file, field, kind, how many)
PLAN = [
    ("debian_pairs.jsonl", "query", "query", 72),
    ("gettext_pairs.jsonl", "positive", "query", 48),
    ("debian_pairs.jsonl", "positive", "document", 96),
    ("manpage_pairs.jsonl", "positive", "document", 24),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "train")
    parser.add_argument("--out", type=Path, default=REPO / "kalm_rag" / "data" / "calibration.jsonl")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    lines: list[dict[str, str]] = []
    seen: set[str] = set()
    for name, field, kind, per_split in PLAN:
        rows = [json.loads(line) for line in (args.train / name).open(encoding="utf-8") if line.strip()]
        rng.shuffle(rows)
        picked: list[dict[str, str]] = []
        for row in rows:
            text = str(row[field]).strip()
            if not text or text in seen or len(text) > 2000:
                continue
            seen.add(text)
            lang = (
                "en" if kind == "document" and name != "gettext_pairs.jsonl" else str(row.get("lang", "en"))
            )
            picked.append({"text": text, "kind": kind, "lang": lang})
            if len(picked) == 2 * per_split:
                break
        for i, item in enumerate(picked):
            lines.append({**item, "split": "calibration" if i % 2 == 0 else "heldout"})
    rng.shuffle(lines)
    args.out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    print(f"wrote {len(lines)} texts to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
