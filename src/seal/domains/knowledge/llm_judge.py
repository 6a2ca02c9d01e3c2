"""The paper's grader: a chat model behind an OpenAI-compatible endpoint asked whether an answer matches the key.

Requests, retries (transport errors, HTTP 408 / 409 / 429 / 5xx, with the server's Retry-After honoured) and
reply parsing are the `openai` client's; this module only builds the question and reads the verdict.
"""

from __future__ import annotations

import os
import re

import openai

from seal.domains.knowledge.grading import JUDGE_PROMPT, GradingError


class LLMJudge:
    """Asks an OpenAI-compatible chat-completions endpoint for a yes/no verdict.

    Options fall back to the environment: ``SEAL_JUDGE_BASE_URL``, ``SEAL_JUDGE_MODEL`` and
    ``SEAL_JUDGE_API_KEY`` (or ``OPENAI_API_KEY``). A request that still fails after ``retries`` retries, or a
    reply that is not yes/no, raises ``GradingError``.
    """

    name = "llm-judge"

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 3) -> None:
        base_url = (base_url or os.environ.get("SEAL_JUDGE_BASE_URL", "https://api.openai.com/v1")).rstrip("/")
        self.url = f"{base_url}/chat/completions"
        self.model = model or os.environ.get("SEAL_JUDGE_MODEL", "gpt-4.1")
        self.version = self.model
        api_key = api_key or os.environ.get("SEAL_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        # a local endpoint needs no key, but the client insists on one: a placeholder it sends and they ignore
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout,
                                    max_retries=retries)

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        if not prediction.strip():
            return False
        reply = self._complete(JUDGE_PROMPT.format(question=question, gold=gold, prediction=prediction))
        verdict = re.sub(r"[^a-z]", "", reply.lower())
        if verdict not in ("yes", "no"):
            raise GradingError(f"judge replied neither yes nor no: {reply[:200]!r}")
        return verdict == "yes"

    def _complete(self, prompt: str) -> str:
        try:
            response = self.client.chat.completions.create(
                model=self.model, temperature=0, messages=[{"role": "user", "content": prompt}])
        except openai.APIStatusError as err:
            raise self._failed(f"HTTP {err.status_code}: {err.message}") from err
        except openai.APIConnectionError as err:
            raise self._failed(str(err.__cause__ or err)) from err
        except (openai.APIResponseValidationError, ValueError) as err:  # ValueError: a body that is not JSON
            raise GradingError(f"malformed reply from {self.url}: {err}") from err
        choices = getattr(response, "choices", None)
        content = choices[0].message.content if choices else None
        if not isinstance(content, str):
            raise GradingError(f"malformed reply from {self.url}: {str(response)[:200]!r}")
        return content

    def _failed(self, reason: str) -> GradingError:
        return GradingError(f"judge request to {self.url} failed ({reason}); point SEAL_JUDGE_BASE_URL (and "
                            "SEAL_JUDGE_MODEL, SEAL_JUDGE_API_KEY) at a reachable OpenAI-compatible endpoint")
