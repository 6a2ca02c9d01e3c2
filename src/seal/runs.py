"""Run directories: resolved config, metrics.jsonl, results, report.md and plots, one folder per run.

A finished run (its results file exists) is never written into again; an unfinished one (killed
mid-way) can be resumed from the records it already holds. Result files are written atomically, so a
kill never leaves a half-written results file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from seal.config import as_recorded, save_config, to_dict


class RunExistsError(FileExistsError):
    pass


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_run_dir(kind: str, root: str | Path = "runs") -> Path:
    """A fresh `runs/<kind>-<timestamp>[-n]` directory that no other run uses.

    The directory is created (empty) here, atomically, so two callers in the same second never get the same one.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    Path(root).mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = Path(root) / (f"{kind}-{stamp}" if n == 1 else f"{kind}-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


class RunPathError(ValueError):
    """An output directory that cannot be a run directory: a file, under a file, or not writable."""


def check_writable(path: Path) -> None:
    """Raise RunPathError unless `path` is, or can be made, a directory this process can write into.

    Checked by trying (and undoing): permissions, read-only file systems and files in the way all fail
    the same way they would mid-run, but before any model is loaded. Leaves nothing behind.
    """
    hint = "choose another output directory"
    if path.exists() and not path.is_dir():
        raise RunPathError(f"{path} is a file, not a directory; {hint}")
    missing = []
    existing = path
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise RunPathError(f"{path} lies under {existing}, which is a file; {hint}")
    probe = path / ".seal-write-check"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise RunPathError(f"cannot write into {path} ({e.strerror}); {hint}") from e
    finally:
        for made in missing:  # deepest first
            if made.is_dir():
                made.rmdir()


def first_missing(path: Path) -> Path | None:
    """The outermost directory of `path` that does not exist yet (what a failed command must remove), if any."""
    top = None
    while not path.exists() and path != path.parent:
        top, path = path, path.parent
    return top


def remove_unstarted(path: Path, made: Path | None) -> None:
    """Undo a run that failed before its first record: the config.yaml and empty plots/ that `Run` wrote, then
    the directories made for it, as far as they are empty. A run with records is left to be resumed."""
    if not path.is_dir() or {p.name for p in path.iterdir()} - {"config.yaml", "plots"}:
        return  # records, results or someone else's files: not a run that never started
    (path / "config.yaml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (path / "plots").rmdir()
    with contextlib.suppress(OSError):  # a directory someone else wrote into stays
        while made is not None and path.is_relative_to(made):
            path.rmdir()
            path = path.parent


@contextlib.contextmanager
def out_dir(out: str | Path | None, kind: str) -> Iterator[Path]:
    """A command's run directory: `out` (checked to be writable before any model loads), or a fresh
    `runs/<kind>-<time>`. If the command fails before its run logged a record, what it wrote is removed,
    so that a user error leaves nothing behind and the fixed command can use the same directory."""
    if out:
        path = Path(out)
        check_writable(path)
        made = first_missing(path)
    else:
        path = default_run_dir(kind)
        made = path
    try:
        yield path
    except BaseException:
        remove_unstarted(path, made)
        if not out:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # runs/ too, if nothing else is in it
        raise


def check_new(path: str | Path, results_name: str = "results.json", resume: bool = True) -> None:
    """Raise RunExistsError (or RunPathError) when `path` cannot take a new run (see `Run`); leaves nothing behind."""
    path = Path(path)
    check_writable(path)
    if (path / results_name).exists():
        raise RunExistsError(f"{path} holds a finished run; choose another output directory")
    if path.exists() and any(path.iterdir()) and not resume:
        raise RunExistsError(f"{path} is not empty; choose another output directory")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in out.items()}


def check_same_config(saved: Path, config: Any) -> None:
    """A resumed run must use the config it started with, or its records would mix two experiments. A setting
    the saved config lacks was added to seal after the run started, and the run did what its default does (or,
    for a default changed since, what `as_recorded` says)."""
    if not saved.exists():
        return
    flat = lambda c: _flatten(yaml.safe_load(yaml.safe_dump(to_dict(c))))  # noqa: E731
    old = {**flat(type(config)()), **_flatten(as_recorded(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}))}
    new = flat(config)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise RunExistsError(f"{saved.parent} holds an unfinished run with a different config ({', '.join(changed)}); "
                             f"resume with --config {saved}, or choose another output directory")


class CorruptRecordsError(ValueError):
    """A metrics.jsonl line that is not a record, other than a last line cut short by a kill."""


def read_records(metrics_path: Path, **match: Any) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl whose fields equal `match`.

    Only a last line without its newline (cut by a kill, or still being written) is skipped; any other
    line that is not a JSON record means the file was damaged, and reading it raises CorruptRecordsError.
    """
    if not metrics_path.exists():
        return []
    # The piece after the last newline is "" in a whole file, else a record cut short: lost with the kill,
    # redone on resume.
    complete = metrics_path.read_text(encoding="utf-8").split("\n")[:-1]
    out = []
    for n, line in enumerate(complete, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorruptRecordsError(f"{metrics_path}:{n}: not a JSON record ({e.msg}); the file was damaged: "
                                      "repair or delete that line to use the run") from e
        if not isinstance(rec, dict):
            raise CorruptRecordsError(f"{metrics_path}:{n}: not a JSON record (a {type(rec).__name__})")
        if all(rec.get(k) == v for k, v in match.items()):
            out.append(rec)
    return out


class Run:
    """One run's directory. `results_name` is the file whose presence marks the run finished."""

    def __init__(self, path: str | Path, config: Any, results_name: str = "results.json", resume: bool = True):
        self.path = Path(path)
        self.results_path = self.path / results_name
        check_new(self.path, results_name, resume)
        check_same_config(self.path / "config.yaml", config)
        (self.path / "plots").mkdir(parents=True, exist_ok=True)
        save_config(config, self.path / "config.yaml")
        self.metrics_path = self.path / "metrics.jsonl"
        if self.metrics_path.exists():
            data = self.metrics_path.read_bytes()
            if data and not data.endswith(b"\n"):  # drop a record cut by a kill, so the next one starts its own line
                with self.metrics_path.open("rb+") as f:
                    f.truncate(data.rfind(b"\n") + 1)

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (flushed at once, so a kill loses nothing logged)."""
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """Logged records whose fields equal `match` (used to resume without redoing finished work)."""
        return read_records(self.metrics_path, **match)

    def report(self, markdown: str) -> None:
        atomic_write(self.path / "report.md", markdown)

    def finish(self, results: dict[str, Any]) -> None:
        atomic_write(self.results_path, json.dumps(results, indent=2) + "\n")
