"""Writes the PyTorch reference fixtures tests/test_training.py reads. Run by hand, never in CI:

    /work/torchenv/bin/python tests/make_training_fixtures.py   (torch 2.13.0, CPU)

Two whole training runs of 30 steps each, on fixed batches drawn with NumPy from a seed:

- `mlp`: Linear(20, 64), ReLU, LayerNorm(64), Linear(64, 64), GELU, Linear(64, 5);
  CrossEntropyLoss; AdamW with weight decay; OneCycleLR (which also cycles Adam's beta1);
  clip_grad_norm_.
- `lm`: a small decoder-style language model: Embedding(17, 32, padding_idx=0) plus
  learned positions, a pre-norm and a post-norm TransformerEncoderLayer (d_model 32,
  4 heads, feed-forward 64, gelu, dropout 0, batch_first) under a causal float mask,
  LayerNorm and a Linear head; CrossEntropyLoss with label smoothing and ignore_index on
  the padded targets; Adam with (coupled) weight decay; SequentialLR(LinearLR warm-up,
  CosineAnnealingLR); clip_grad_norm_.

For each run, tests/fixtures/training.npz holds the batches, the initial state dict
(`<run>/init/<key>`), and per step the loss, the lr the optimizer used and the total
gradient norm before clipping, then the final state dict (`<run>/final/<key>`).
training.json records the state-dict keys in order, the PyTorch version and a hash of
this script. tests/test_training.py writes the same runs with `engine` in place of
`torch`; keep the two in step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402

SOURCES = ("make_training_fixtures.py",)
STEPS = 30

# ---- data ---------------------------------------------------------------------------------
MLP_IN, MLP_CLASSES, MLP_BATCH = 20, 5, 16
VOCAB, PAD, SEQ, LM_BATCH = 17, 0, 12, 8
MLP_CLIP, LM_CLIP = 1.0, 0.9


def mlp_batches(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (STEPS, B, 20) float32 and class targets (STEPS, B) int64 from a fixed
    random linear teacher, so that the loss falls."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((MLP_IN, MLP_CLASSES))
    x = rng.standard_normal((STEPS, MLP_BATCH, MLP_IN)).astype(np.float32)
    y = np.argmax(x @ teacher + 0.3 * rng.standard_normal((STEPS, MLP_BATCH, MLP_CLASSES)), -1)
    return x, y.astype(np.int64)


def lm_batches(seed: int = 1) -> np.ndarray:
    """Token sequences (STEPS, B, SEQ) int64: arithmetic progressions over the tokens
    1..16 (mod 16) of random start, stride and length, padded at the end with PAD."""
    rng = np.random.default_rng(seed)
    seqs = np.full((STEPS, LM_BATCH, SEQ), PAD, dtype=np.int64)
    for s in range(STEPS):
        for b in range(LM_BATCH):
            n = int(rng.integers(6, SEQ + 1))
            start, stride = int(rng.integers(0, 16)), int(rng.integers(1, 4))
            seqs[s, b, :n] = (start + stride * np.arange(n)) % 16 + 1
    return seqs


def causal_mask(n: int) -> np.ndarray:
    """The float mask of nn.Transformer.generate_square_subsequent_mask: -inf above the
    diagonal, 0 elsewhere."""
    return np.triu(np.full((n, n), -np.inf, dtype=np.float32), k=1)


# ---- models -------------------------------------------------------------------------------
class TinyLM(nn.Module):
    def __init__(self, vocab: int = VOCAB, d_model: int = 32, max_len: int = SEQ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = {
            "d_model": d_model,
            "nhead": 4,
            "dim_feedforward": 64,
            "dropout": 0.0,
            "activation": "gelu",
            "batch_first": True,
        }
        self.blocks = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(**layer, norm_first=True),
                nn.TransformerEncoderLayer(**layer, norm_first=False),
            ]
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        x = self.tok(tokens) + self.pos[:, :n]
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.head(self.norm(x))


def make_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(MLP_IN, 64),
        nn.ReLU(),
        nn.LayerNorm(64),
        nn.Linear(64, 64),
        nn.GELU(),
        nn.Linear(64, MLP_CLASSES),
    )


# ---- the runs -----------------------------------------------------------------------------
def train_mlp(store: dict[str, np.ndarray]) -> list[str]:
    torch.manual_seed(0)
    model = make_mlp()
    save_state(store, "mlp/init", model)
    x, y = mlp_batches()
    store["mlp/x"], store["mlp/y"] = x, y
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=STEPS)
    losses, lrs, norms = [], [], []
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(model(torch.from_numpy(x[step])), torch.from_numpy(y[step]))
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), max_norm=MLP_CLIP)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    record(store, "mlp", model, losses, lrs, norms, MLP_CLIP)
    return list(model.state_dict())


def train_lm(store: dict[str, np.ndarray]) -> list[str]:
    torch.manual_seed(1)
    model = TinyLM()
    save_state(store, "lm/init", model)
    seqs = lm_batches()
    store["lm/seqs"] = seqs
    mask = torch.from_numpy(causal_mask(SEQ - 1))
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=1e-3)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS - 5, eta_min=1e-4)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[5])
    losses, lrs, norms = [], [], []
    for step in range(STEPS):
        batch = torch.from_numpy(seqs[step])
        inputs, targets = batch[:, :-1], batch[:, 1:]
        opt.zero_grad()
        logits = model(inputs, mask)
        loss = loss_fn(logits.reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), max_norm=LM_CLIP)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    record(store, "lm", model, losses, lrs, norms, LM_CLIP)
    return list(model.state_dict())


def save_state(store: dict[str, np.ndarray], prefix: str, model: nn.Module) -> None:
    for k, v in model.state_dict().items():
        store[f"{prefix}/{k}"] = v.detach().numpy().copy()


def record(
    store: dict[str, np.ndarray],
    name: str,
    model: nn.Module,
    losses: list[float],
    lrs: list[float],
    norms: list[float],
    clip: float,
) -> None:
    store[f"{name}/losses"] = np.array(losses, dtype=np.float32)
    store[f"{name}/lrs"] = np.array(lrs, dtype=np.float64)
    store[f"{name}/grad_norms"] = np.array(norms, dtype=np.float32)
    save_state(store, f"{name}/final", model)
    print(f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; grad norms", end=" ")
    print(f"{min(norms):.3f}..{max(norms):.3f} (clipped on {sum(n > clip for n in norms)})")


def main() -> None:
    torch.set_num_threads(1)
    store: dict[str, Any] = {}
    keys = {"mlp": train_mlp(store), "lm": train_lm(store)}
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "training.npz", **store)
    write_meta("training", SOURCES, torch.__version__, steps=STEPS, state_dict_keys=keys)
    size = (FIXTURES / "training.npz").stat().st_size
    print(f"wrote {len(store)} arrays ({size} bytes) with torch {torch.__version__}")


if __name__ == "__main__":
    main()
