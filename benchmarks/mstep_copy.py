"""Does the M-step itself teach the generator to copy the passage? Behaviour cloning with no selection at all.

ReST-EM's round-2 self-edits copy far more of their passage than round 1's winners did (docs/results.md: winners
14 %, the next generator 43-62 %). This separates the M-step from the reward: it samples 3 self-edits on each of
`seal train knowledge`'s first 8 training passages (as those runs did), clones `--picks` of them chosen at random (not
by reward; as many as round 1 rewarded) with the configured M-step (`restem.sft.*`, `mask_copied`), then samples
one self-edit per evaluation passage from the cloned generator and prints the share of its words copied from the
passage (`answers.copied_share`, the bench's `copied` column). `--no-sft` measures the untouched generator.

    python benchmarks/mstep_copy.py --no-sft                       # the generator before any M-step
    python benchmarks/mstep_copy.py                                # the default M-step
    python benchmarks/mstep_copy.py --set restem.sft.lr=1e-4       # a gentler one
    python benchmarks/mstep_copy.py --set mask_copied=true         # no loss on the copied words
    python benchmarks/mstep_copy.py --set restem.sft.kl_to_base=1  # stay near the generator before it

The last line is JSON: `copied` (the mean over evaluation passages; `per_passage` pairs two runs through
`seal.bench.stats.paired_difference`), the words per self-edit, the cloned examples and what they copied
(`pool_copied`), and the seconds of the M-step and of the sampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

from seal import models
from seal.config import load_config
from seal.domains.knowledge.answers import copied_share
from seal.domains.knowledge.data import load_squad, split_eval
from seal.generation import PIECE_SEPARATOR, sample_self_edits, self_edit_examples
from seal.progress import step_bar
from seal.rl.restem import sft_generator
from seal.train import TrainKnowledgeConfig, knowledge_domain, training_contexts


def copied(self_edits: list[str], passages: list) -> list[float]:
    return [copied_share(s.split(PIECE_SEPARATOR), p.context) for s, p in zip(self_edits, passages)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=9, help="random self-edits cloned (round 1 rewarded 9 of 24)")
    parser.add_argument("--eval-offset", type=int, default=18, help="first evaluation passage sampled on")
    parser.add_argument("--eval-passages", type=int, default=22)
    parser.add_argument("--no-sft", action="store_true", help="measure the untouched generator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="TrainKnowledgeConfig key=value")
    args = parser.parse_args()
    cfg = load_config(TrainKnowledgeConfig, overrides=["passages=8", "restem.k=3", *args.overrides])
    restem, domain = cfg.restem, knowledge_domain(cfg)
    model, tokenizer = models.load(restem.generator)
    result = {"sft": None if args.no_sft else {**dataclasses.asdict(restem.sft), "mask_copied": cfg.mask_copied}}
    if not args.no_sft:
        contexts = training_contexts(cfg)
        pool = sample_self_edits(model, tokenizer, domain, contexts, restem.sampling, restem.k, seed=args.seed + 1)
        picks = random.Random(args.seed).sample([(i, j) for i in range(len(contexts)) for j in range(restem.k)],
                                                args.picks)
        examples = [x for i, j in picks
                    for x in self_edit_examples(tokenizer, domain, contexts[i], pool[i][j], restem.sampling)]
        start = time.perf_counter()
        with step_bar("M-step") as on_step:
            model = sft_generator(model, tokenizer, examples, restem.sft, on_step=on_step)
        result.update(examples=len(examples), sft_s=round(time.perf_counter() - start, 1),
                      pool_copied=sum(copied([pool[i][j] for i, j in picks], [contexts[i] for i, _ in picks]))
                      / len(picks))
    held_out = split_eval(load_squad(cfg.data))[0][args.eval_offset:args.eval_offset + args.eval_passages]
    start = time.perf_counter()
    self_edits = [s[0] for s in sample_self_edits(model, tokenizer, domain, held_out, restem.sampling, 1,
                                                  seed=args.seed + 7)]
    shares = copied(self_edits, held_out)
    print(f"first self-edit ({held_out[0].title}):\n{self_edits[0][:800]}\n")
    result.update(passages=len(held_out), copied=sum(shares) / len(shares), per_passage=shares,
                  words=sum(len(s.split()) for s in self_edits) / len(self_edits),
                  sample_s=round(time.perf_counter() - start, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
