"""Train the learned grader on the tune half of GPT-4.1's verdicts and write its JSON model.

    python scripts/train_grader.py [--data PATH] [--seed 0] [--out src/seal/assets/learned_grader.json]

The same data and seed reproduce the shipped model byte for byte; benchmarks/grader_agreement.py
measures it on the held-out half.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seal.domains.knowledge.grader_training import train
from seal.domains.knowledge.learned_grader import DEFAULT_MODEL, model_version

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/grader/gpt41_verdicts_dev.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"error: verdicts file {args.data} does not exist", file=sys.stderr)
        return 2
    try:
        model = train(args.data, seed=args.seed)
    except (ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(model, indent=1) + "\n")
    t = model["training"]
    print(f"wrote {args.out} (version {model_version(model)}): C={t['regularisation_C']}, "
          f"threshold {model['threshold']}, cross-validated tune agreement {t['cv_agreement']:.2%} on {t['rows']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
