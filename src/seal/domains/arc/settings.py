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
    """Structured: written freely, untrained smollm2-135m's self-edits were usable 1 time in 32 at temperature
    1.0 and 3 in 32 at 0.7 (8 per task on 4 filtered tasks), too few for ReST-EM to learn from; filled in,
    every one parses and the model still makes each choice. Filled in at 0.7 it mostly copied the prompt's
    example, so temperature stays 1.0 for exploration. Free generation (`structured: false`): a JSON
    self-edit takes ~100 tokens (~120 pretty-printed); 256 leaves room for a short preamble."""

    structured: bool = True
    max_new_tokens: int = bounded(256, ge=1)
