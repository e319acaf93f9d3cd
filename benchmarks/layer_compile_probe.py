"""Would compiling Gemma 3's decoder layers one by one (regional compilation) avoid the
per-shape recompiles that make Unsloth's compiled Gemma slow (RESULTS.md, "Eager against
compiled")? A probe on a random 4-layer Gemma 3 (transformers, SDPA, no Unsloth): each layer
compiled with dynamic shapes, trained on batches of several lengths beside an eager copy; it
prints the losses of both and dynamo's count of graphs after each batch.

    python benchmarks/layer_compile_probe.py          (CPU: inductor's C++ backend, minutes)
"""

from __future__ import annotations

import copy
import time


def main() -> None:
    import torch
    from torch._dynamo.utils import counters
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16, sliding_window=32, max_position_embeddings=512)
    cfg._attn_implementation = "sdpa"
    eager = Gemma3ForCausalLM(cfg)
    compiled = copy.deepcopy(eager)
    for layer in compiled.model.layers:
        layer.compile(dynamic=True)
    t0 = time.time()
    for rows, length in [(4, 64), (4, 128), (3, 192), (4, 64), (2, 256)]:
        ids = torch.randint(3, 512, (rows, length),
                            generator=torch.Generator().manual_seed(length))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        a = eager(**batch).loss
        a.backward()
        b = compiled(**batch).loss
        b.backward()
        print(f"{rows} x {length}: loss eager {a.item():.6f} compiled {b.item():.6f}, graphs "
              f"{counters['stats']['unique_graphs']}, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
