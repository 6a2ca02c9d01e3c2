"""A memory that learns document after document: versions on disk, learn / answer / rollback, and the
continual strategies (merge, replay, router, consolidate). See seal.memory.memory."""

from seal.domains.knowledge.data import Question
from seal.memory.config import MemoryConfig
from seal.memory.memory import Document, LearnResult, Memory
from seal.memory.store import MemoryDirError

__all__ = ["Document", "LearnResult", "Memory", "MemoryConfig", "MemoryDirError", "Question"]
