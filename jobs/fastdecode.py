"""Greedy decoding with a static KV cache, each step replayed from a captured CUDA graph.

transformers' ``generate`` runs every decoding step from Python: a few hundred small kernels
launched one by one, a mask rebuilt, logits processors and stopping criteria called, and the
GPU waits for the CPU between them (issue 46: 4-6 thousand generated tokens/s for a 270M model
on an H100). Here one batch is decoded by:

1. a static cache (``transformers.cache_utils.StaticLayer`` per layer, sized to the batch's
   prompt width plus its answer budget), filled by a prefill in chunks of the prompt;
2. a decoding step (the forward of one token per row, the masks for this position, the argmax,
   the token written to the answers) that reads and writes only fixed tensors, so that on a
   CUDA card it is captured once per batch as a CUDA graph and replayed: one launch per step;
3. the answers leave the GPU every ``check_every`` steps, when the stop rules (a stop token, the
   JSON answer closed or looping, the straggler release: ``jobs.evaluate.AnswerStop``) are
   applied; a batch's answers are then cut back to the step where it would have stopped, so
   the result is what ``generate`` returns, padding included, up to the rounding that a
   different attention kernel makes.

Masks are built here, not by transformers: an additive mask per attention kind (full, and
sliding where the model has sliding-window layers), passed as the 4-D mask or the per-kind
mapping that transformers' models take as given. Pad positions attend to themselves, so no row
of a softmax is empty.

Where it does not apply (sampling, constrained decoding, a quantised or split model, an
attention implementation that takes no 4-D mask, an architecture not checked on the card),
``unsupported`` says why and the caller uses ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

CHECKED_MODEL_TYPES = ("gemma3_text",)
"""Architectures eval.decoder auto decodes with the static decoder: checked on the card against
generate() under Unsloth (Gemma 3's text models, 270M and 1B, keep transformers' modules
there; the multimodal 4B and up are model_type gemma3 and not checked). Unsloth replaces the
Llama family's forward with its own, mask and cache included, so the others keep generate()
unless eval.decoder is static (their transformers modules pass the CPU tests)."""

MASK_ELEMENTS = 1 << 28
"""The most attention scores (rows x heads x prompt chunk x cache length) one prefill chunk
computes."""


@dataclass(frozen=True)
class Engine:
    """Which decoder a run uses, and why."""

    name: str
    """static-graphs (the captured step on a CUDA card), static (the same step run eagerly) or
    generate (transformers' generate)."""
    reason: str = ""
    """Why generate, where it is."""

    def doc(self) -> dict[str, str]:
        return {"engine": self.name, **({"reason": self.reason} if self.reason else {})}


def choose(model: Any, setting: str, gen_kwargs: dict[str, Any], constrained: bool) -> Engine:
    """The decoder for eval.decoder = setting (auto, static or generate)."""
    if setting == "generate":
        return Engine("generate", "eval.decoder: generate")
    why = unsupported(model, gen_kwargs, constrained, any_architecture=setting == "static")
    if why:
        return Engine("generate", why)
    on_card = next(model.parameters()).device.type == "cuda"
    if setting == "auto" and not on_card:
        return Engine("generate", "no CUDA card (eval.decoder: static runs it on the CPU)")
    return Engine("static-graphs" if on_card else "static")


def unsupported(model: Any, gen_kwargs: dict[str, Any], constrained: bool,
                any_architecture: bool = False) -> str:
    """Why the static decoder cannot decode for this model and these settings ('' if it can)."""
    if gen_kwargs.get("do_sample"):
        return "sampled generation"
    if constrained:
        return "constrained decoding"
    config = _text_config(model)
    attn = getattr(config, "_attn_implementation", None) or "eager"
    if attn not in ("eager", "sdpa"):
        return f"attention implementation {attn}"
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False) \
            or getattr(config, "quantization_config", None) is not None:
        return "a 4- or 8-bit model"
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, dict) and len(set(map(str, device_map.values()))) > 1:
        return "a model split over several devices"
    kind = getattr(model.config, "model_type", "")  # Gemma 3 4B and up: gemma3, multimodal
    if not any_architecture and kind not in CHECKED_MODEL_TYPES:
        return f"architecture {kind} not checked with the static decoder"
    return ""


def _text_config(model: Any) -> Any:
    config = model.config
    return getattr(config, "text_config", None) or config


GROUPED = "medsweep_grouped"
"""The attention implementation the static decoder registers with transformers and sets while
it decodes (grouped_attention)."""


def grouped_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
                      ) -> tuple[Any, None]:
    """Attention for the static decoder. A decoding step (one query per row) with grouped
    key/value heads reads each cached key/value head once: the query heads of a group are
    taken as that head's queries, where transformers first copies every cached key and value
    once per query head (repeat_kv), the largest memory traffic of a step over a long cache.
    Prompts (several queries) go through PyTorch's scaled_dot_product_attention with the keys
    repeated, as transformers' sdpa does."""
    import torch.nn.functional as F

    b, heads, q, d = query.shape
    groups = heads // key.shape[1]
    # A prompt chunk's mask covers the keys up to its last query only: the cache beyond is
    # empty, and attending over it would cost as much again. (A decoding step's covers all.)
    keys = attention_mask.shape[-1] if attention_mask is not None else key.shape[2]
    key, value = key[:, :, :keys], value[:, :, :keys]
    if q == 1 and groups > 1:
        out = F.scaled_dot_product_attention(query.reshape(b, key.shape[1], groups, d), key,
                                             value, attn_mask=attention_mask, scale=scaling)
        return out.reshape(b, heads, 1, d).transpose(1, 2), None
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         scale=scaling)
    return out.transpose(1, 2), None


class _Grouped:
    """Within: the model's attention is grouped_attention (registered once with
    transformers); its own afterwards."""

    def __init__(self, config: Any):
        self.config, self.before = config, config._attn_implementation

    def __enter__(self) -> None:
        from transformers import AttentionInterface

        AttentionInterface.register(GROUPED, grouped_attention)
        self.config._attn_implementation = GROUPED

    def __exit__(self, *exc: Any) -> None:
        self.config._attn_implementation = self.before


class StaticDecoder:
    """Greedy decoding of left-padded batches (see the module's docstring)."""

    def __init__(self, model: Any, pad_id: int, graphs: bool, check_every: int = 8):
        config = _text_config(model)
        self.decoder, self.head = model.get_decoder(), model.get_output_embeddings()
        self.pad_id, self.graphs = pad_id, graphs
        self.check_every = max(1, check_every)
        self.layers = int(config.num_hidden_layers)
        self.heads = int(getattr(config, "num_attention_heads", 1) or 1)
        kinds = list(getattr(config, "layer_types", None) or [])
        self.window = int(getattr(config, "sliding_window", None) or 0)
        # A per-kind mapping for models that name their layers' kinds; one tensor otherwise.
        self.kinds = sorted(set(kinds))
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.config = config

    def generate(self, ids: Any, mask: Any, budget: int, stop: Any) -> list[list[int]]:
        """The new tokens of each row (ids, mask: left-padded CPU tensors), as generate returns
        them: every row as long as the batch ran, pad after a row's end. stop:
        jobs.evaluate.AnswerStop for these rows (fed here; its finished() holds afterwards)."""
        rows, _ = ids.shape
        if budget <= 0:
            return [[] for _ in range(rows)]
        state = _State.make(self, ids, mask, budget)
        with _Grouped(self.config):
            state.begin(self._prefill(state, ids.to(self.device)))
            ran = self._decode(state, stop, budget)
        out: list[list[int]] = state.out[:, :ran].tolist()
        return _padded_after_end(out, stop, self.pad_id)

    def _prefill(self, state: _State, ids: Any) -> Any:
        """Fill the cache with the prompts, in chunks that keep each chunk's masks and
        attention scores under MASK_ELEMENTS; the first answer token of each row."""
        rows, width = ids.shape
        chunk = max(1, min(width, MASK_ELEMENTS // max(1, rows * self.heads * state.length)))
        first = None
        for start in range(0, width, chunk):
            end = min(width, start + chunk)
            first = self.next_token(ids[:, start:end], state.prefill_masks(self, start, end),
                                    state.positions[:, start:end], state.cache)
        assert first is not None
        return first

    def next_token(self, ids: Any, masks: Any, positions: Any, cache: Any) -> Any:
        """The greedy next token of each row after ids (the last position's logits)."""
        out = self.decoder(input_ids=ids, attention_mask=masks, position_ids=positions,
                           past_key_values=cache, use_cache=True)
        return self.head(out.last_hidden_state[:, -1, :]).argmax(-1)

    def masks_for(self, allowed: Any, query: Any, key: Any) -> Any:
        """The additive masks, shape (rows, 1, queries, keys), for allowed (rows, queries,
        keys): one tensor, or the per-kind mapping (the sliding kind limited to the window;
        a query always sees its own key)."""
        import torch

        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        low = torch.full((), torch.finfo(self.dtype).min, dtype=self.dtype,
                         device=allowed.device)

        def additive(ok: Any) -> Any:
            return torch.where(ok, zero, low)[:, None]

        sliding = allowed
        if self.window and (not self.kinds or "sliding_attention" in self.kinds):
            near = (query[:, None] - key[None, :]) < self.window
            sliding = (allowed & near[None]) | (query[:, None] == key[None, :])[None]
        if not self.kinds:
            return additive(sliding)
        return {kind: additive(sliding if kind == "sliding_attention" else allowed)
                for kind in self.kinds}

    def _decode(self, state: _State, stop: Any, budget: int) -> int:
        """Decoding steps until the stop rules end the batch or the budget is spent; the number
        of answer tokens the batch keeps. The tokens of the steps run so far are copied off the
        card and fed to the stop rules while the card runs the next check_every steps."""
        step = state.step_fn(self)
        ran, fed, graph = 1, 0, None  # the prefill gave the first token
        while True:
            tokens = _Copy(state.out[:, fed:ran])
            launched = min(self.check_every, budget - ran)
            if self.graphs and graph is None and ran > 1 and launched:
                graph = _capture(step)  # after eager steps: lazy set-up is done
            for _ in range(launched):
                graph.replay() if graph is not None else step()
            stop.feed_rows(tokens.rows())
            fed = ran
            end = stop.end_step()
            if end is not None:
                return int(end)
            if not launched:
                return budget
            ran += launched


class _Copy:
    """Tokens on their way off the card: queued before later steps are launched, read after."""

    def __init__(self, tokens: Any):
        import torch

        self.event = None
        if tokens.is_cuda:
            self.host = tokens.to("cpu", non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = tokens.clone()

    def rows(self) -> list[list[int]]:
        if self.event is not None:
            self.event.synchronize()
        out: list[list[int]] = self.host.tolist()
        return out


def _capture(step: Callable[[], None]) -> Any:
    """step as a CUDA graph (the caller ran it eagerly first, so every lazy allocation and
    first-call set-up happened outside the capture)."""
    import torch

    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def _padded_after_end(out: list[list[int]], stop: Any, pad_id: int) -> list[list[int]]:
    """Each row's tokens after the one that ended it replaced by pad, as generate pads them."""
    for row, toks in enumerate(out):
        end = stop.ended_at(row)
        if end is not None and end < len(toks):
            toks[end:] = [pad_id] * (len(toks) - end)
    return out


@dataclass
class _State:
    """One batch's fixed tensors: the cache, which keys hold a real token, each row's next
    position, the answers and the decoding step's inputs."""

    cache: Any
    length: int
    width: int
    valid: Any
    positions: Any
    keys: Any
    out: Any
    token: Any
    position: Any
    slot: Any
    step_index: Any

    @classmethod
    def make(cls, dec: StaticDecoder, ids: Any, mask: Any, budget: int) -> _State:
        import torch
        from transformers.cache_utils import Cache, StaticLayer

        rows, width = ids.shape
        length = width + budget - 1
        dev = dec.device
        mask = mask.to(dev)
        valid = torch.ones((rows, length), dtype=torch.bool, device=dev)
        valid[:, :width] = mask.bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = Cache(layers=[StaticLayer(length) for _ in range(dec.layers)])
        return cls(cache=cache, length=length, width=width, valid=valid,
                   positions=positions,
                   keys=torch.arange(length, device=dev),
                   out=torch.full((rows, budget), dec.pad_id, dtype=torch.long, device=dev),
                   token=torch.zeros((rows, 1), dtype=torch.long, device=dev),
                   position=positions[:, -1:].clone() + 1,
                   slot=torch.full((1,), width, dtype=torch.long, device=dev),
                   step_index=torch.ones((1,), dtype=torch.long, device=dev))

    def prefill_masks(self, dec: StaticDecoder, start: int, end: int) -> Any:
        """The masks of the prompt positions start..end over the keys before end (the cache
        after them is empty: grouped_attention reads the keys the mask covers)."""
        query, keys = self.keys[start:end], self.keys[:end]
        allowed = self.valid[:, None, :end] & (keys[None, None, :] <= query[None, :, None])
        allowed = allowed | (keys[None, None, :] == query[None, :, None])
        return dec.masks_for(allowed, query, keys)

    def begin(self, first: Any) -> None:
        self.out[:, 0] = first
        self.token[:, 0] = first

    def step_fn(self, dec: StaticDecoder) -> Callable[[], None]:
        """One decoding step over fixed tensors only (so it can be captured)."""

        def step() -> None:
            allowed = self.valid[:, None, :] & (self.keys <= self.slot)[None, None, :]
            masks = dec.masks_for(allowed, self.slot, self.keys)
            nxt = dec.next_token(self.token, masks, self.position, self.cache)
            self.out.index_copy_(1, self.step_index, nxt[:, None])
            self.token.copy_(nxt[:, None])
            self.position.add_(1)
            self.slot.add_(1)
            self.step_index.add_(1)

        return step
