"""Run directories: resolved config, metrics.jsonl, results, report.md and plots, one folder per run.

A finished run (its results file exists) is never written into again; an unfinished one (killed
mid-way) can be resumed from the records it already holds. Result files are written atomically, so a
kill never leaves a half-written results file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from seal.config import save_config


class RunExistsError(FileExistsError):
    pass


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_run_dir(kind: str, root: str | Path = "runs") -> Path:
    """A fresh `runs/<kind>-<timestamp>[-n]` path that no other run uses."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{kind}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{kind}-{stamp}-{n}"
    return path


class Run:
    """One run's directory. `results_name` is the file whose presence marks the run finished."""

    def __init__(self, path: str | Path, config: Any, results_name: str = "results.json", resume: bool = True):
        self.path = Path(path)
        self.results_path = self.path / results_name
        if self.results_path.exists():
            raise RunExistsError(f"{self.path} holds a finished run; choose another output directory")
        if self.path.exists() and any(self.path.iterdir()) and not resume:
            raise RunExistsError(f"{self.path} is not empty; choose another output directory")
        (self.path / "plots").mkdir(parents=True, exist_ok=True)
        save_config(config, self.path / "config.yaml")
        self.metrics_path = self.path / "metrics.jsonl"

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (flushed at once, so a kill loses nothing logged)."""
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """Logged records whose fields equal `match` (used to resume without redoing finished work)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
            if all(rec.get(k) == v for k, v in match.items()):
                out.append(rec)
        return out

    def report(self, markdown: str) -> None:
        atomic_write(self.path / "report.md", markdown)

    def finish(self, results: dict[str, Any]) -> None:
        atomic_write(self.results_path, json.dumps(results, indent=2) + "\n")
