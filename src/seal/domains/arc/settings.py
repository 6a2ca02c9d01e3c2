"""ARC defaults for the generic inner-loop and sampling configs.

They are subclasses, not factory-made instances, so that a partial override in a YAML file or a
`--set inner.rank=8` keeps the ARC defaults of the other fields (a nested section that is given at all
is built from its class defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from seal.config import InnerConfig, SamplingConfig, bounded


@dataclass
class ArcInnerConfig(InnerConfig):
    """Batch size 1, so the self-edit step budget counts examples x epochs; room for the longest example kept
    (`ArcDomain` drops longer ones, so none is truncated). lr and epochs come from each self-edit."""

    batch_size: int = bounded(1, ge=1)
    max_length: int = bounded(1024, ge=2)


@dataclass
class ArcSamplingConfig(SamplingConfig):
    """A JSON self-edit takes ~100 tokens (~120 pretty-printed); 256 leaves room for the short preamble
    that small models often write before it. Temperature 0.7: untrained smollm2-135m wrote 3 usable
    self-edits of 32 at 0.7 and 1 of 32 at 1.0 (8 per task on 4 filtered tasks, seed 0)."""

    temperature: float = bounded(0.7, ge=0)
    max_new_tokens: int = bounded(256, ge=1)
