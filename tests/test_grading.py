"""Offline graders (SQuAD metrics, containment, lenient) and the LLM judge against a local fake endpoint."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from seal.domains.knowledge.grading import (
    DEFAULT_GRADER,
    GRADER_NAMES,
    GradingError,
    denies_gold,
    exact_match,
    f1_score,
    get_grader,
    normalize_answer,
)

OFFLINE = [name for name in GRADER_NAMES if name not in ("llm-judge", "local-judge")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("Theatre and anthem", "theatre and anthem"),
        ("U.S.A.", "usa"),
        ("  \t\n ", ""),
    ],
)
def test_normalize_answer_follows_squad(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("The Harbour Bridge.", "harbour bridge")
    assert not exact_match("harbour bridges", "harbour bridge")


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("the big red barn", "red barn", 0.8),  # P = 2/3, R = 1
        ("blue barn door", "red barn", 0.4),  # P = 1/3, R = 1/2
        ("barn barn", "barn", 2 / 3),  # a repeated token counts once
        ("green field", "red barn", 0.0),
        ("", "red barn", 0.0),
    ],
)
def test_f1_score_on_hand_computed_examples(prediction, gold, expected):
    assert f1_score(prediction, gold) == pytest.approx(expected)


def test_containment_respects_word_boundaries():
    contains = get_grader("containment")
    assert contains("How long did it take?", "10", "It took 10 days.")
    assert not contains("How long did it take?", "10", "It took 100 days.")
    assert not contains("Which animal?", "cat", "They concatenate strings.")
    assert contains("Which city?", "the Old Port", "Boats dock in old port, mostly.")


@pytest.mark.parametrize("name", OFFLINE)
@pytest.mark.parametrize("prediction", ["", "   \n"])
def test_empty_prediction_is_wrong_for_every_offline_grader(name, prediction):
    assert get_grader(name)("What is it?", "it", prediction) is False


@pytest.mark.parametrize(
    ("question", "gold", "prediction", "expected"),
    [
        ("In which year did the bridge open?", "1932", "The bridge opened to traffic in 1932.", True),
        ("In which year did the bridge open?", "1932", "It opened in 1923.", False),
        ("How long did the siege last?", "10 days", "It lasted 100 days.", False),
        ("Who designed the tower?", "Marta Ilves", "It was designed by the architect Marta Ilves.", True),
        ("How many seats does the hall have?", "12,500", "The hall seats about 12500 people.", True),
        ("How many moons does it have?", "two", "It has 2 moons.", True),
        ("When was the text written?", "the 16th century", "It was written in 1566.", True),  # a year states its century
        ("When was the text written?", "the 16th century", "It was written in 1666.", False),
        ("When was the text written?", "the 2nd century", "It was written in 1566.", False),  # 2nd millennium, not century
        ("When did writing begin there?", "in the 1st millennium BCE", "Around 900 BC.", True),
        ("When did the craze peak?", "the 1970s", "In 1975.", True),
        ("When did the craze peak?", "1975", "In the 1970s.", False),  # a decade does not state its year
        ("What did the guild make?", "wooden toys", "The guild made toys out of wood.", True),
        ("What river runs through the valley?", "the Ostra river", "A river runs through the valley.", False),
        ("Why was the fair cancelled?", "heavy rain flooded the main square",
         "It was called off because heavy rain flooded the square.", True),
        ("Which agency ran the survey?", "Northern Mapping Office (NMO)", "The NMO ran it.", True),
        ("What colour is the flag?", "green", "The flag is blue.", False),
    ],
)
@pytest.mark.parametrize("name", sorted({DEFAULT_GRADER, "lenient", "learned"}))
def test_main_graders_on_our_examples(name, question, gold, prediction, expected):
    assert get_grader(name)(question, gold, prediction) is expected


@pytest.mark.parametrize(
    ("question", "gold", "prediction", "expected"),
    [
        ("Who founded it?", "Lina Marsk", "It was not Lina Marsk.", True),
        ("Since when is it electric?", "2016", "It has never been electric, not even in 2016.", True),
        ("Who founded it?", "Lina Marsk", "Lina Marsk, not Peter Holm.", False),
        ("Who founded it?", "Lina Marsk", "Not Peter Holm but Lina Marsk.", False),
        ("What did they refuse to support?", "the Confederacy", "They did not support the Confederacy.", False),
        ("What did he never return to?", "Poland", "He never returned to Poland.", False),  # a negative question
        ("Who founded it?", "Lina Marsk", "Peter Holm.", False),  # no mention, nothing denied
    ],
)
def test_denies_gold_only_when_every_mention_is_negated(question, gold, prediction, expected):
    assert denies_gold(question, gold, prediction) is expected


def test_registry():
    assert DEFAULT_GRADER in GRADER_NAMES
    assert {"containment", "exact", "f1", "llm-judge"} <= set(GRADER_NAMES)
    for name in OFFLINE:
        assert get_grader(name).name == name
    assert get_grader("f1", threshold=0.5).threshold == 0.5
    with pytest.raises(ValueError, match="unknown grader 'oracle'.*containment"):
        get_grader("oracle")


# --- llm-judge against a fake OpenAI-compatible server on 127.0.0.1 -----------


class FakeEndpoint:
    """Serves queued (status, body) replies to POST /v1/chat/completions and records the requests."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                endpoint.requests.append((self.path, headers, json.loads(body)))
                status, reply = endpoint.replies.pop(0) if endpoint.replies else (500, "no reply queued")
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "1")  # the client's retries honour it: no backoff in tests
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def completion(content):
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.fixture
def serve():
    endpoints = []

    def start(*replies):
        endpoints.append(FakeEndpoint(replies))
        return endpoints[-1]

    yield start
    for endpoint in endpoints:
        endpoint.close()


def judge(endpoint, **options):
    return get_grader("llm-judge", base_url=endpoint.base_url, model="judge-model", **options)


def test_llm_judge_yes_and_no(serve):
    endpoint = serve(completion("Yes."), completion("no"))
    grade = judge(endpoint, api_key="sk-test")
    assert grade("Who founded the mill?", "Ada Verne", "Ada Verne founded it.") is True
    assert grade("Who founded the mill?", "Ada Verne", "Tomas Kell.") is False

    path, headers, body = endpoint.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    prompt = body["messages"][-1]["content"]
    for part in ("Who founded the mill?", "Ada Verne", "Ada Verne founded it.", "yes", "no"):
        assert part in prompt


def test_llm_judge_reads_options_from_the_environment(serve, monkeypatch):
    endpoint = serve(completion("yes"))
    monkeypatch.setenv("SEAL_JUDGE_BASE_URL", endpoint.base_url)
    monkeypatch.setenv("SEAL_JUDGE_MODEL", "env-model")
    monkeypatch.setenv("SEAL_JUDGE_API_KEY", "sk-env")
    assert get_grader("llm-judge")("Q?", "gold", "gold") is True
    _, headers, body = endpoint.requests[0]
    assert body["model"] == "env-model" and headers["authorization"] == "Bearer sk-env"


def test_llm_judge_rejects_a_reply_that_is_neither_yes_nor_no(serve):
    endpoint = serve(completion("Probably, the answer looks right."))
    with pytest.raises(GradingError, match="neither yes nor no"):
        judge(endpoint)("Q?", "gold", "some answer")
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize("body", ["not json", {"choices": []}, {"choices": [{"message": {"content": None}}]}])
def test_llm_judge_rejects_a_malformed_body(serve, body):
    with pytest.raises(GradingError, match="malformed"):
        judge(serve((200, body)))("Q?", "gold", "some answer")


def test_llm_judge_gives_up_after_bounded_retries(serve):
    endpoint = serve(*[(500, {"error": "boom"})] * 5)
    with pytest.raises(GradingError, match="500"):
        judge(endpoint, retries=2)("Q?", "gold", "some answer")
    assert len(endpoint.requests) == 3


def test_llm_judge_recovers_from_a_transient_error(serve):
    endpoint = serve((503, {"error": "busy"}), completion("yes"))
    assert judge(endpoint, retries=2)("Q?", "gold", "some answer") is True
    assert len(endpoint.requests) == 2


def test_llm_judge_does_not_retry_a_client_error(serve):
    endpoint = serve((401, {"error": "bad key"}), completion("yes"))
    with pytest.raises(GradingError, match="401"):
        judge(endpoint, retries=2)("Q?", "gold", "some answer")
    assert len(endpoint.requests) == 1


def test_llm_judge_grades_an_empty_prediction_without_a_request(serve):
    endpoint = serve()
    assert judge(endpoint)("Q?", "gold", "  ") is False
    assert endpoint.requests == []
