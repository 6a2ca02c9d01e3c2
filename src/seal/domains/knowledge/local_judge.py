"""The paper's yes/no judge run on a local model (an embedded one by default): no API key, no network.

The judge reads ``JUDGE_PROMPT`` as a chat turn and its verdict is whichever of "yes" and "no" it
finds likelier as the first word of its reply. A 135M-0.5B model asked to reply freely often answers
with something else ("The answer is ..."), so reading the two words' probabilities always gives a
verdict; ``bias`` shifts the decision for models that lean towards one word (positive: stricter).
"""

from __future__ import annotations

import torch

from seal import models
from seal.domains.knowledge.grading import JUDGE_PROMPT
from seal.generation import chat_prompt, next_token_logprobs

DEFAULT_JUDGE_MODEL = "qwen2.5-coder-0.5b-instruct"
VERDICT_WORDS = {True: ("yes", "Yes", " yes", " Yes"), False: ("no", "No", " no", " No")}


class LocalJudge:
    name = "local-judge"

    def __init__(self, model: str = DEFAULT_JUDGE_MODEL, bias: float = 0.0, loaded=None) -> None:
        """`loaded` is a (model, tokenizer) pair already in memory; otherwise `model` is loaded by name."""
        self.model, self.tokenizer = loaded or models.load(model)
        self.bias = bias
        self.version = f"{self.model.config.name_or_path}+bias{bias:g}"
        first = {v: {self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words}
                 for v, words in VERDICT_WORDS.items()}
        # A token both words start with (a lone space, say) would count for both: keep only telling ones.
        self._ids = {v: sorted(first[v] - first[not v]) for v in first}
        if not all(self._ids.values()):
            raise ValueError(f"the tokenizer of {self.version} cannot tell 'yes' from 'no' by their first token")

    def margin(self, question: str, gold: str, prediction: str) -> float:
        """log P(a "yes" word) - log P(a "no" word) for the judge's first reply token."""
        prompt = chat_prompt(self.tokenizer, JUDGE_PROMPT.format(question=question, gold=gold, prediction=prediction))
        (logprobs,) = next_token_logprobs(self.model, self.tokenizer, [prompt], self._ids[True] + self._ids[False])
        yes, no = torch.tensor(logprobs).split([len(self._ids[True]), len(self._ids[False])])
        return torch.logsumexp(yes, 0).item() - torch.logsumexp(no, 0).item()

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        if not prediction.strip():
            return False
        return self.margin(question, gold, prediction) > self.bias
