"""The per-epoch functions without Ray: the loss falls, a seed fixes every number, validation decodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from micar.data.dataset import iter_local_batches
from micar.model import build_model
from micar.text.tokenizer import load_tokenizer
from micar.training.loop import epoch_seed, seed_everything, train_one_epoch, validate
from micar.training.optim import build_optimizer, build_scheduler, param_groups

DEVICE = torch.device("cpu")


def _run(cfg, prepared: Path, epochs: int) -> tuple[list[float], torch.nn.Module, dict[str, torch.Tensor]]:
    """Train ``epochs`` epochs; returns the losses, the model and its weights after epoch 1."""
    tok = load_tokenizer(prepared / "tokenizer")
    cfg.model.vocab_size = len(tok.get_vocab())
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train)
    losses, after_first = [], {}
    for epoch in range(1, epochs + 1):
        seed_everything(epoch_seed(cfg.train.seed, epoch, 0))
        batches = iter_local_batches(
            prepared, "train", batch_size=cfg.train.batch_size, text_seq_len=cfg.model.text_seq_len
        )
        stats = train_one_epoch(model, batches, opt, cfg, device=DEVICE)
        sched.step()
        losses.append(stats.loss)
        if epoch == 1:
            after_first = {k: v.clone() for k, v in model.state_dict().items()}
    return losses, model, after_first


@pytest.fixture(scope="module")
def two_runs(tiny_prepared_dir: Path, tiny_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    cfg = tiny_config(tiny_prepared_dir, tmp, train__grad_accum=2)
    first = _run(cfg, tiny_prepared_dir, 3)
    second = _run(tiny_config(tiny_prepared_dir, tmp, train__grad_accum=2), tiny_prepared_dir, 1)
    return cfg, first, second


def test_loss_falls(two_runs) -> None:
    _, (losses, _, _), _ = two_runs
    assert losses[-1] < losses[0] * 0.8, losses


def test_same_seed_same_numbers(two_runs) -> None:
    _, (losses_a, _, weights_a), (losses_b, model_b, _) = two_runs
    assert losses_a[0] == losses_b[0]
    for key, value in model_b.state_dict().items():
        assert torch.equal(weights_a[key], value), key


def test_validate_decodes_and_scores(two_runs, tiny_prepared_dir: Path) -> None:
    cfg, (_, model, _), _ = two_runs
    tok = load_tokenizer(tiny_prepared_dir / "tokenizer")
    batches = iter_local_batches(tiny_prepared_dir, "val", batch_size=5, text_seq_len=cfg.model.text_seq_len)
    loss, decoded = validate(model, batches, tok, cfg, device=DEVICE, decode_limit=7)
    assert 0 < loss < 10
    assert len(decoded) == 7 and decoded.ids[0] == "val-0000"
    assert decoded.references[0].startswith("there is a")
    assert all(isinstance(g, str) for g in decoded.generated)


def test_two_param_groups(tiny_prepared_dir: Path, tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_prepared_dir, tmp_path, train__v_lr=5e-5, train__lr=1e-4, model__vocab_size=20)
    model = build_model(cfg.model)
    groups = param_groups(model, cfg.train)
    assert [(g["name"], g["lr"]) for g in groups] == [("vision", 5e-5), ("rest", 1e-4)]
    vision_ids = {id(p) for p in model.vis_enc.parameters()}
    assert {id(p) for p in groups[0]["params"]} == vision_ids
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
