"""A learner process for the kill-safety test: learns documents into a memory, printing each stage."""

import sys

import torch

from seal.config import EvalConfig, InnerConfig, ModelConfig, SamplingConfig
from seal.memory import Document, Memory, MemoryConfig, Question

torch.set_num_threads(1)
model_dir, memory_dir, strategy, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = MemoryConfig(model=ModelConfig(name=model_dir), strategy=strategy, sampling=SamplingConfig(max_new_tokens=12),
                   inner=InnerConfig(rank=2, alpha=4, epochs=3), eval=EvalConfig(max_new_tokens=4, grader="containment"),
                   gate=False, consolidate_every=2)
memory = Memory.open(memory_dir, cfg)
for i in range(count):
    doc = Document(f"Canal {i}", f"Canal {i} joins the river Tesk to the harbour of Lune. It opened in {1800 + i}.",
                   (Question(f"When did Canal {i} open?", str(1800 + i)),))
    result = memory.learn(doc, on_progress=lambda stage, done, total: print(stage, flush=True))
    print("learned", result.version, flush=True)
