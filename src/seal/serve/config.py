"""The service's typed config (`seal serve --config FILE --set key=value`), saved as DATA/serve.yaml at start
so that the consolidation worker runs under exactly the server's settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from seal.config import ConfigError, bounded, from_dict
from seal.memory import MemoryConfig

CONFIG_FILE = "serve.yaml"


@dataclass
class ScheduleConfig:
    """When consolidation starts by itself: every `interval_minutes`, and/or daily at `daily_at` (HH:MM, UTC),
    and only when at least `min_pending` documents wait. Neither set: only on request."""

    interval_minutes: float | None = None
    daily_at: str | None = None
    min_pending: int = bounded(1, ge=1)

    def daily_time(self) -> dt.time | None:
        if not self.daily_at:
            return None
        try:
            return dt.time.fromisoformat(self.daily_at)
        except ValueError:
            raise ConfigError(f"schedule.daily_at: {self.daily_at!r} is not a time of day HH:MM") from None


@dataclass
class ServeConfig:
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    host: str = "127.0.0.1"  # loopback unless the user opens it up
    port: int = bounded(8000, ge=0, le=65535)
    max_document_chars: int = bounded(20_000, ge=1)  # a longer one is refused with 413 (seal.memory refuses > 20k)
    max_request_bytes: int = bounded(1_000_000, ge=1)  # a larger body is refused with 413, read no further
    passage_words: int = bounded(120, ge=8)  # pending documents are searched in passages of about this length
    search_k: int = bounded(3, ge=1)  # default k of /v1/search
    chat_passages: int = bounded(2, ge=0)  # retrieved passages of pending documents put into a chat prompt
    chat_batch: int = bounded(8, ge=1)  # concurrent chat requests answered in one batched generation at most
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def load_saved(data_dir: str | Path) -> ServeConfig:
    """The config the server saved in `data_dir` (the worker's view of it)."""
    import yaml

    return from_dict(ServeConfig, yaml.safe_load((Path(data_dir) / CONFIG_FILE).read_text(encoding="utf-8")))
