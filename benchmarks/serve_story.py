"""The service's end-to-end story on a real model, through its HTTP API only:

  1. the untouched model answers questions about a fictional document it has never seen;
  2. the document is added: the same questions answered at once, from retrieval;
  3. consolidation learns it into a new version (self-edit, LoRA, gate on the document's questions);
  4. the new version answers with retrieval turned off (the weights alone);
  5. rollback to the base version, retrieval still off: the old answers again.

    python benchmarks/serve_story.py                      # the default model, seal's built-in Velmora document
    python benchmarks/serve_story.py --model NAME --set memory.inner.epochs=8 ...

Answers are graded as every benchmark grades them (seal's default grader on the answer's first sentence);
every answer is printed beside its gold answer. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import httpx
from serve_load import KEY, start_server

from seal.domains.knowledge.answers import graded_answer
from seal.domains.knowledge.domain import grader_for


def ask_all(api: httpx.Client, questions: list[dict], retrieval: bool) -> dict:
    grade = grader_for("default")
    rows = []
    for q in questions:
        reply = api.post("/v1/chat/completions", json={"model": "seal", "retrieval": retrieval, "messages": [
            {"role": "user", "content": q["question"]}]}).json()
        answer = reply["choices"][0]["message"]["content"]
        rows.append({"question": q["question"], "gold": q["answer"], "answer": answer,
                     "correct": bool(grade(q["question"], q["answer"], graded_answer(answer))),
                     "version": reply["seal"]["version"],
                     "retrieved": [d["title"] for d in reply["seal"]["documents"]]})
    return {"accuracy": sum(r["correct"] for r in rows) / len(rows), "rows": rows}


def show(step: str, result: dict) -> None:
    print(f"\n== {step}: {result['accuracy']:.0%} correct")
    for r in result["rows"]:
        print(f"  [{'x' if r['correct'] else ' '}] {r['question']} | gold {r['gold']!r} | {r['answer']!r} "
              f"(version {r['version']}{', retrieved ' + ', '.join(r['retrieved']) if r['retrieved'] else ''})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--start-timeout", type=float, default=900)
    args = p.parse_args()
    assets = files("seal") / "assets"
    text = (assets / "velmora_lighthouse.txt").read_text(encoding="utf-8")
    questions = [json.loads(line) for line in (assets / "velmora_lighthouse.jsonl").read_text().splitlines() if line]
    story = {}
    with tempfile.TemporaryDirectory(prefix="seal-story-") as tmp:
        proc, url = start_server(Path(tmp) / "data", args)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=600) as api:
                story["untouched"] = ask_all(api, questions, retrieval=True)
                show("1. untouched model, nothing stored", story["untouched"])
                api.post("/v1/documents", json={"title": "Velmora Lighthouse", "text": text, "questions": questions})
                story["retrieval"] = ask_all(api, questions, retrieval=True)
                show("2. document added, answered at once from retrieval", story["retrieval"])
                t = time.perf_counter()
                job = api.post("/v1/consolidate").json()
                while (state := api.get(f"/v1/jobs/{job['job']}").json())["state"] == "running":
                    time.sleep(5)
                decision = state["decisions"][0] if state["decisions"] else {}
                story["consolidation"] = {"state": state["state"], "seconds": round(time.perf_counter() - t, 1),
                                          **{k: decision.get(k) for k in ("accepted", "reason", "version", "quiz_before",
                                                                          "quiz_after", "probe_before", "probe_after")}}
                print(f"\n== 3. consolidation: {json.dumps(story['consolidation'])}")
                story["weights"] = ask_all(api, questions, retrieval=False)
                show("4. after consolidation, retrieval off", story["weights"])
                api.post("/v1/versions/base/activate").raise_for_status()
                story["rollback"] = ask_all(api, questions, retrieval=False)
                show("5. rolled back to base, retrieval off", story["rollback"])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(json.dumps(story))


if __name__ == "__main__":
    main()
