"""Caption decoding over the model's small API: encode the images once, then step the decoder
with a self-attention cache. Greedy decoding is beam size 1; wider beams run a real beam search
batched over images x beams, with finished hypotheses kept and length normalisation
``score / length ** length_penalty`` (length counts generated tokens, <eos> included).

The published "beam search" was greedy in effect (spec section 9); greedy here reproduces it
token for token, including a <pad> emitted mid-sequence being fed back unmasked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from micar.model import EncodedImages, MicarVLMoE


class BeamOutput(NamedTuple):
    sequences: Tensor  # [b, max_len] best hypothesis per image, without <sos>, <pad> after <eos>
    scores: Tensor  # [b] its length-normalised log-probability


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; every submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _check_len(model: MicarVLMoE, max_len: int) -> None:
    if not 1 <= max_len <= model.text_seq_len:
        raise ValueError(
            f"max_len must be in [1, text_seq_len={model.text_seq_len}] (the decoder has that many positions), "
            f"got {max_len}"
        )


def _step_logits(model: MicarVLMoE, seqs: Tensor, step: int, encoded: EncodedImages, cache) -> Tensor:
    """Next-token logits [N, V] after the prefix seqs[:, : step + 1]."""
    if cache is not None:
        return model.decode(seqs[:, step : step + 1], encoded, cache=cache).logits[:, -1]
    return model.decode(seqs[:, : step + 1], encoded).logits[:, -1]


def _trim(seqs: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """Pad after each row's first <eos>; cut the columns no row uses."""
    is_eos = seqs == eos_id
    after = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    seqs = seqs.masked_fill(after, pad_id)
    length = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, seqs.shape[1])
    return seqs[:, : int(length.max()) if seqs.shape[0] else 0]


def greedy_search(
    model: MicarVLMoE,
    encoded: EncodedImages,
    *,
    max_len: int,
    sos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    use_cache: bool = True,
) -> Tensor:
    """Argmax decoding -> [b, max_len] ids (no <sos>, <pad> after <eos>). Call under eval_mode."""
    b = encoded.memory.shape[0]
    device = encoded.memory.device
    seqs = torch.full((b, max_len + 1), pad_id, dtype=torch.long, device=device)
    seqs[:, 0] = sos_id
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    cache = model.new_cache(max_len) if use_cache else None
    for step in range(max_len):
        token = _step_logits(model, seqs, step, encoded, cache).argmax(dim=-1)
        seqs[:, step + 1] = token.masked_fill(finished, pad_id)
        finished |= token == eos_id
        if bool(finished.all()):
            break
    return seqs[:, 1:]


def beam_search(
    model: MicarVLMoE,
    encoded: EncodedImages,
    *,
    max_len: int,
    beam_size: int,
    length_penalty: float = 1.0,
    sos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    use_cache: bool = True,
) -> BeamOutput:
    """Beam search batched over images x beams. Call under eval_mode.

    Each step, every live beam ending with <eos> is offered to the image's finished hypotheses
    (the best k by normalised score are kept), and the best k continuations that do not end stay
    live. The first step expands a single beam. An image stops once its k-th finished score beats
    the best score any live beam could still reach (log-probabilities only fall, so the bound is
    the live score normalised at the most favourable reachable length); at max_len the live beams
    are finished as they are.
    """
    k = beam_size
    b = encoded.memory.shape[0]
    device = encoded.memory.device
    n = b * k
    encoded = encoded.repeat_interleave(k)
    seqs = torch.full((n, max_len + 1), pad_id, dtype=torch.long, device=device)
    seqs[:, 0] = sos_id
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    fin_scores = torch.full((b, k), float("-inf"), device=device)
    fin_seqs = torch.full((b, k, max_len), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    first_row = torch.arange(b, device=device)[:, None] * k
    cache = model.new_cache(max_len) if use_cache else None
    reached_end = True
    for step in range(max_len):
        length = step + 1
        logp = torch.log_softmax(_step_logits(model, seqs, step, encoded, cache).float(), dim=-1)
        vocab = logp.shape[-1]

        # Finished: every live beam ending here with <eos>, for images still searching.
        ended = (scores + logp[:, eos_id].view(b, k)) / length**length_penalty
        ended = ended.masked_fill(done[:, None], float("-inf"))
        # [n, max_len]: the hypotheses written out, <eos> last
        ended_seqs = seqs[:, 1 : max_len + 1].clone()
        ended_seqs[:, step] = eos_id
        fin_scores, pick = torch.cat((fin_scores, ended), dim=1).topk(k, dim=1)
        fin_seqs = torch.cat((fin_seqs, ended_seqs.view(b, k, max_len)), dim=1)
        fin_seqs = fin_seqs.gather(1, pick[:, :, None].expand(-1, -1, max_len))

        # Live: the best k continuations that do not end.
        logp[:, eos_id] = float("-inf")
        # [n, V] -> [b, k * V]: every continuation of an image's beams
        cand = (scores.reshape(n, 1) + logp).view(b, k * vocab)
        scores, top = cand.topk(k, dim=1)
        src = (first_row + top // vocab).flatten()
        seqs = seqs.index_select(0, src)
        seqs[:, step + 1] = (top % vocab).flatten()
        if cache is not None:
            cache.reorder(src)

        if length == max_len:
            break
        best_live = scores.max(dim=1).values
        bound = torch.maximum(best_live / (length + 1) ** length_penalty, best_live / max_len**length_penalty)
        done |= fin_scores[:, -1] >= bound
        if bool(done.all()):
            reached_end = False
            break
    if reached_end:
        # Live beams at max_len are hypotheses too.
        last = torch.where(done[:, None], float("-inf"), scores / max_len**length_penalty)
        fin_scores, pick = torch.cat((fin_scores, last), dim=1).topk(k, dim=1)
        live_seqs = seqs[:, 1:].view(b, k, max_len)
        fin_seqs = torch.cat((fin_seqs, live_seqs), dim=1).gather(1, pick[:, :, None].expand(-1, -1, max_len))
    return BeamOutput(fin_seqs[:, 0], fin_scores[:, 0])


def generate(
    model: MicarVLMoE,
    images: Tensor | EncodedImages,
    *,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    sos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    use_cache: bool = True,
) -> Tensor:
    """Caption token ids for each image -> LongTensor [b, <= max_len].

    images [b, 3, H, W] (or already ``model.encode_images``-d). Rows hold no <sos>, end at
    <eos> and are padded with ``pad_id`` after it; the width is the longest row. Runs in eval
    mode without autograd; the model's modes are restored afterwards.
    """
    _check_len(model, max_len)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    with eval_mode(model):
        encoded = images if isinstance(images, EncodedImages) else model.encode_images(images)
        special = dict(sos_id=sos_id, eos_id=eos_id, pad_id=pad_id, use_cache=use_cache)
        if beam_size == 1:
            seqs = greedy_search(model, encoded, max_len=max_len, **special)
        else:
            seqs = beam_search(
                model, encoded, max_len=max_len, beam_size=beam_size, length_penalty=length_penalty, **special
            ).sequences
    return _trim(seqs, eos_id, pad_id)
