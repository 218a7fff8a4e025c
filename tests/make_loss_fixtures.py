"""Writes the PyTorch reference fixtures for losses, attention and nn.utils. Run by hand:

    /work/torchenv/bin/python tests/make_loss_fixtures.py   (torch 2.13.0, CPU)

For every case below it stores the inputs, the options, PyTorch's outputs, a seeded
upstream gradient and PyTorch's gradients of the inputs (and, for modules, the state
dict and the parameters' gradients) in tests/fixtures/losses.npz; losses.json holds the
case specs, the state-dict keys and a hash of this script (tests fail when it changed
after the fixtures were made). The engine's tests (test_losses.py, test_attention.py)
rebuild each call from the spec.
"""

from __future__ import annotations

import math
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_meta import FIXTURES, write_meta  # noqa: E402

SOURCES = ("make_loss_fixtures.py",)
STORE: dict[str, np.ndarray] = {}
SPECS: list[dict[str, Any]] = []


def rng(name: str, what: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{name}/{what}".encode()))


def normal(name: str, what: str, *shape: int, scale: float = 1.0) -> np.ndarray:
    return np.asarray(rng(name, what).standard_normal(shape) * scale, dtype=np.float32)


def sigmoid_focal_loss(
    x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float, reduction: str
) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss, line for line (torchvision is not installed)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


FUNCTIONS = {
    "cross_entropy": F.cross_entropy,
    "nll_loss": F.nll_loss,
    "mse_loss": F.mse_loss,
    "l1_loss": F.l1_loss,
    "smooth_l1_loss": F.smooth_l1_loss,
    "huber_loss": F.huber_loss,
    "binary_cross_entropy": F.binary_cross_entropy,
    "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
    "sigmoid_focal_loss": sigmoid_focal_loss,
    "scaled_dot_product_attention": F.scaled_dot_product_attention,
}


def upstream(name: str, j: int, out: torch.Tensor) -> np.ndarray:
    return normal(name, f"gy{j}", *out.shape)


def backprop(name: str, outs: list[torch.Tensor | None]) -> None:
    roots, grads = [], []
    for j, o in enumerate(outs):
        if o is None:
            continue
        STORE[f"{name}/out{j}"] = o.detach().numpy()
        if o.requires_grad:
            gy = upstream(name, j, o)
            STORE[f"{name}/gy{j}"] = gy
            roots.append(o)
            grads.append(torch.from_numpy(gy))
    if roots:
        torch.autograd.backward(roots, grads)


def function_case(
    name: str,
    fn: str,
    args: list[np.ndarray],
    grad: list[bool],
    tensor_kwargs: dict[str, np.ndarray] | None = None,
    module: bool = True,
    **kwargs: Any,
) -> None:
    """One call of a functional: positional arrays, tensor keyword arrays, plain options.

    `module`: whether the loss module (same options) is to be checked against it too.
    """
    tensor_kwargs = tensor_kwargs or {}
    tensors = []
    for i, (a, g) in enumerate(zip(args, grad, strict=True)):
        STORE[f"{name}/in{i}"] = a
        tensors.append(torch.from_numpy(a.copy()).requires_grad_(g))
    tkw = {}
    for k, a in tensor_kwargs.items():
        STORE[f"{name}/kw/{k}"] = a
        tkw[k] = torch.from_numpy(a.copy())
    out = FUNCTIONS[fn](*tensors, **tkw, **kwargs)
    backprop(name, [out])
    for i, t in enumerate(tensors):
        if t.grad is not None:
            STORE[f"{name}/grad{i}"] = t.grad.numpy()
    SPECS.append(
        {
            "name": name,
            "kind": "function",
            "fn": fn,
            "grad": grad,
            "tensor_kwargs": sorted(tensor_kwargs),
            "kwargs": kwargs,
            "module": module,
        }
    )


# ---- losses -------------------------------------------------------------------------------
def class_targets(name: str, shape: tuple[int, ...], c: int, ignored: int = 1) -> np.ndarray:
    t = rng(name, "target").integers(0, c, shape).astype(np.int64)
    flat = t.reshape(-1)
    flat[:ignored] = -100  # the default ignore_index takes part in every case
    return t


def probabilities(name: str, shape: tuple[int, ...]) -> np.ndarray:
    p = rng(name, "target").random(shape).astype(np.float32) + 0.05
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def loss_cases() -> None:
    c = 5
    weight = (rng("weight", "w").random(c) + 0.5).astype(np.float32)
    for red in ("mean", "sum", "none"):
        for opts in ("plain", "weight", "smooth", "weight_smooth"):
            name = f"ce_{opts}_{red}"
            x, t = normal(name, "x", 6, c), class_targets(name, (6,), c)
            tkw = {"weight": weight} if "weight" in opts else {}
            ls = {"smooth": 0.2, "weight_smooth": 0.3}.get(opts, 0.0)
            function_case(
                name, "cross_entropy", [x, t], [True, False], tkw, reduction=red, label_smoothing=ls
            )
    name = "ce_ignore_index_1"
    t = class_targets(name, (6,), c, ignored=0)
    t[[1, 4]] = 1
    function_case(
        name,
        "cross_entropy",
        [normal(name, "x", 6, c), t],
        [True, False],
        {"weight": weight},
        ignore_index=1,
        label_smoothing=0.1,
    )
    for ls in (0.0, 0.2):
        name = f"ce_all_ignored_{ls}"
        t = np.full(4, -100, np.int64)
        function_case(
            name, "cross_entropy", [normal(name, "x", 4, c), t], [True, False], label_smoothing=ls
        )
    for red in ("mean", "none"):
        name = f"ce_kdim_{red}"
        x, t = normal(name, "x", 2, c, 3, 2), class_targets(name, (2, 3, 2), c, ignored=2)
        function_case(
            name,
            "cross_entropy",
            [x, t],
            [True, False],
            {"weight": weight},
            reduction=red,
            label_smoothing=0.15,
        )
    name = "ce_unbatched"
    function_case(name, "cross_entropy", [normal(name, "x", c), np.array(3)], [True, False])
    for red in ("mean", "sum", "none"):
        name = f"ce_probs_{red}"
        x, p = normal(name, "x", 4, c), probabilities(name, (4, c))
        function_case(name, "cross_entropy", [x, p], [True, True], reduction=red)
    name = "ce_probs_weight_smooth_kdim"
    x, p = normal(name, "x", 2, c, 3), probabilities(name, (2, c, 3))
    function_case(
        name, "cross_entropy", [x, p], [True, True], {"weight": weight}, label_smoothing=0.2
    )

    for red in ("mean", "sum", "none"):
        name = f"nll_{red}"
        x = torch.log_softmax(torch.from_numpy(normal(name, "x", 6, c)), 1).numpy()
        function_case(
            name, "nll_loss", [x, class_targets(name, (6,), c)], [True, False], reduction=red
        )
    name = "nll_weight_kdim"
    x = torch.log_softmax(torch.from_numpy(normal(name, "x", 2, c, 4)), 1).numpy()
    t = class_targets(name, (2, 4), c, ignored=2)
    function_case(name, "nll_loss", [x, t], [True, False], {"weight": weight})
    name = "nll_ignore_index_2"
    x = torch.log_softmax(torch.from_numpy(normal(name, "x", 6, c)), 1).numpy()
    t = class_targets(name, (6,), c, ignored=0)
    t[0] = 2
    function_case(name, "nll_loss", [x, t], [True, False], {"weight": weight}, ignore_index=2)

    regressions: list[tuple[str, dict[str, Any]]] = [
        ("mse_loss", {}),
        ("l1_loss", {}),
        ("smooth_l1_loss", {}),
        ("smooth_l1_loss", {"beta": 0.5}),
        ("smooth_l1_loss", {"beta": 0.0}),
        ("huber_loss", {}),
        ("huber_loss", {"delta": 0.3}),
        ("huber_loss", {"delta": 2.5}),
    ]
    for fn, opts in regressions:
        for red in ("mean", "sum", "none"):
            name = f"{fn}_{'_'.join(f'{k}{v}' for k, v in opts.items())}_{red}"
            x, y = normal(name, "x", 4, 3, scale=1.5), normal(name, "y", 4, 3)
            function_case(name, fn, [x, y], [True, True], reduction=red, **opts)
    for fn in ("mse_loss", "l1_loss", "huber_loss"):  # PyTorch 2.6+'s elementwise weight
        for red in ("mean", "sum", "none"):
            name = f"{fn}_weight_{red}"
            x, y = normal(name, "x", 4, 3, scale=1.5), normal(name, "y", 4, 3)
            w = (rng(name, "w").random((4, 3)) + 0.2).astype(np.float32)
            function_case(
                name, fn, [x, y], [True, True], {"weight": w}, module=False, reduction=red
            )
    name = "mse_loss_target_no_grad"
    function_case(name, "mse_loss", [normal(name, "x", 7), normal(name, "y", 7)], [True, False])

    bce_w = (rng("bce", "w").random(3) + 0.5).astype(np.float32)
    for red in ("mean", "sum", "none"):
        for weighted in (False, True):
            name = f"bce_{'weight_' if weighted else ''}{red}"
            x = (rng(name, "x").random((4, 3)) * 0.96 + 0.02).astype(np.float32)
            t = rng(name, "t").random((4, 3)).astype(np.float32)
            tkw = {"weight": bce_w} if weighted else {}
            function_case(name, "binary_cross_entropy", [x, t], [True, True], tkw, reduction=red)
    name = "bce_clamped_log"  # probabilities of exactly 0 and 1: the log is clamped at -100
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.3], np.float32)
    function_case(name, "binary_cross_entropy", [x, t], [False, False], reduction="none")

    pos_weight = (rng("pos", "w").random(3) * 3 + 0.2).astype(np.float32)
    for red in ("mean", "sum", "none"):
        for opts in ("plain", "weight", "pos_weight", "both"):
            name = f"bcel_{opts}_{red}"
            x = normal(name, "x", 4, 3, scale=3.0)
            x[0, 0], x[1, 1] = 60.0, -60.0  # far out: the stable form must not overflow
            t = rng(name, "t").random((4, 3)).astype(np.float32)
            tkw: dict[str, np.ndarray] = {}
            if opts in ("weight", "both"):
                tkw["weight"] = bce_w
            if opts in ("pos_weight", "both"):
                tkw["pos_weight"] = pos_weight
            function_case(
                name, "binary_cross_entropy_with_logits", [x, t], [True, True], tkw, reduction=red
            )

    for gamma, alpha in ((2.0, 0.25), (0.0, 0.5), (1.5, -1.0), (3.0, 0.8), (2.0, 0.0)):
        for red in ("mean", "sum", "none"):
            name = f"focal_g{gamma}_a{alpha}_{red}"
            x = normal(name, "x", 5, 3, scale=2.0)
            t = (rng(name, "t").random((5, 3)) > 0.6).astype(np.float32)
            t[0] = rng(name, "soft").random(3)  # soft labels too
            function_case(
                name,
                "sigmoid_focal_loss",
                [x, t],
                [True, True],
                alpha=alpha,
                gamma=gamma,
                reduction=red,
            )


# ---- scaled_dot_product_attention ---------------------------------------------------------
def sdpa_cases() -> None:
    def qkv(name: str, qs: tuple[int, ...], ks: tuple[int, ...], vs: tuple[int, ...]) -> list:
        return [normal(name, "q", *qs), normal(name, "k", *ks), normal(name, "v", *vs)]

    base = ((2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 5, 6))
    g3 = [True, True, True]
    function_case("sdpa_plain", "scaled_dot_product_attention", qkv("sdpa_plain", *base), g3)
    function_case(
        "sdpa_scale", "scaled_dot_product_attention", qkv("sdpa_scale", *base), g3, scale=0.3
    )
    sq = ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 6))
    function_case(
        "sdpa_causal", "scaled_dot_product_attention", qkv("sdpa_causal", *sq), g3, is_causal=True
    )
    function_case(
        "sdpa_causal_rect",
        "scaled_dot_product_attention",
        qkv("sdpa_causal_rect", *base),
        g3,
        is_causal=True,
    )
    mask = rng("sdpa_bool", "m").random((4, 5)) > 0.3
    mask[:, 0] = True
    mask[2] = False  # a row with nothing to attend to gives zeros
    function_case(
        "sdpa_bool_mask",
        "scaled_dot_product_attention",
        qkv("sdpa_bool_mask", *base),
        g3,
        {"attn_mask": mask},
    )
    bmask = rng("sdpa_bool_b", "m").random((2, 1, 4, 5)) > 0.4
    bmask[..., 1] = True
    function_case(
        "sdpa_bool_mask_batched",
        "scaled_dot_product_attention",
        qkv("sdpa_bool_mask_batched", *base),
        g3,
        {"attn_mask": bmask},
    )
    name = "sdpa_float_mask_grad"
    args = [*qkv(name, *base), normal(name, "m", 2, 1, 4, 5)]
    function_case(name, "scaled_dot_product_attention", args, [True, True, True, True])
    name = "sdpa_3d"
    function_case(
        name, "scaled_dot_product_attention", qkv(name, (3, 4, 8), (3, 6, 8), (3, 6, 8)), g3
    )
    name = "sdpa_gqa"
    function_case(
        name,
        "scaled_dot_product_attention",
        qkv(name, (2, 4, 4, 8), (2, 2, 5, 8), (2, 2, 5, 8)),
        g3,
        enable_gqa=True,
    )


# ---- modules: MultiheadAttention and TransformerEncoderLayer ------------------------------
def module_case(
    name: str,
    module: str,
    init: dict[str, Any],
    inputs: list[np.ndarray],
    forward: dict[str, Any],
    self_attention: bool = False,
) -> None:
    """A seeded PyTorch module's state dict, outputs and every gradient.

    inputs are the positional tensors (float ones require grad); with self_attention the
    first is passed as query, key and value. Bool/float arrays in `forward` under keys
    ending in `mask` are passed as tensors.
    """
    torch.manual_seed(zlib.crc32(name.encode()))
    m = getattr(torch.nn, module)(**init)
    for k, v in m.state_dict().items():
        STORE[f"{name}/sd/{k}"] = v.numpy()
    tensors = []
    for i, a in enumerate(inputs):
        STORE[f"{name}/in{i}"] = a
        tensors.append(torch.from_numpy(a.copy()).requires_grad_(True))
    kwargs = {}
    plain = {}
    for k, v in forward.items():
        if isinstance(v, np.ndarray):
            STORE[f"{name}/kw/{k}"] = v
            kwargs[k] = torch.from_numpy(v.copy())
        else:
            plain[k] = v
    args = [tensors[0]] * 3 if self_attention else tensors
    out = m(*args, **kwargs, **plain)
    backprop(name, list(out) if isinstance(out, tuple) else [out])
    for i, t in enumerate(tensors):
        STORE[f"{name}/grad{i}"] = t.grad.numpy()
    for k, p in m.named_parameters():
        STORE[f"{name}/pgrad/{k}"] = p.grad.numpy()
    SPECS.append(
        {
            "name": name,
            "kind": "module",
            "module": module,
            "init": init,
            "n_inputs": len(inputs),
            "self_attention": self_attention,
            "tensor_kwargs": sorted(k for k, v in forward.items() if isinstance(v, np.ndarray)),
            "kwargs": plain,
            "state_dict_keys": list(m.state_dict()),
        }
    )


def causal_mask(n: int) -> np.ndarray:
    """PyTorch's generate_square_subsequent_mask as a bool mask: True = masked out."""
    return np.triu(np.ones((n, n), dtype=bool), k=1)


def mha_cases() -> None:
    e, h, n, L, S = 16, 4, 3, 4, 5
    mha = "MultiheadAttention"
    name = "mha_self_seq_first"
    module_case(name, mha, {"embed_dim": e, "num_heads": h}, [normal(name, "x", L, n, e)], {}, True)
    name = "mha_self_batch_first_no_weights"
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h, "batch_first": True},
        [normal(name, "x", n, L, e)],
        {"need_weights": False},
        True,
    )
    name = "mha_cross_per_head_weights"
    kpm = np.zeros((n, S), dtype=bool)
    kpm[0, -2:] = True
    kpm[2, 0] = True
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h},
        [normal(name, "q", L, n, e), normal(name, "k", S, n, e), normal(name, "v", S, n, e)],
        {"average_attn_weights": False, "key_padding_mask": kpm},
    )
    name = "mha_kdim_vdim_batch_first"
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h, "kdim": 6, "vdim": 10, "batch_first": True},
        [normal(name, "q", n, L, e), normal(name, "k", n, S, 6), normal(name, "v", n, S, 10)],
        {"attn_mask": rng(name, "m").random((L, S)) > 0.8},
    )
    name = "mha_float_masks_no_bias"
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h, "bias": False},
        [normal(name, "q", L, n, e), normal(name, "k", S, n, e), normal(name, "v", S, n, e)],
        {
            "attn_mask": normal(name, "am", n * h, L, S),
            "key_padding_mask": normal(name, "kpm", n, S),
        },
    )
    name = "mha_masks_no_weights"
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h},
        [normal(name, "x", L, n, e)],
        {"attn_mask": causal_mask(L), "key_padding_mask": kpm[:, :L], "need_weights": False},
        True,
    )
    name = "mha_causal_hint"
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h, "batch_first": True},
        [normal(name, "x", n, L, e)],
        {"attn_mask": causal_mask(L), "is_causal": True, "need_weights": False},
        True,
    )
    name = "mha_unbatched"
    module_case(
        name,
        mha,
        {"embed_dim": e, "num_heads": h},
        [normal(name, "q", L, e), normal(name, "k", S, e), normal(name, "v", S, e)],
        {"average_attn_weights": False},
    )


def tel_cases() -> None:
    d, h, ff, n, L = 16, 4, 32, 3, 5
    tel = "TransformerEncoderLayer"
    base = {"d_model": d, "nhead": h, "dim_feedforward": ff, "dropout": 0.0}
    kpm = np.zeros((n, L), dtype=bool)
    kpm[1, -2:] = True
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("tel_relu_post_norm", {}, {}),
        (
            "tel_gelu_norm_first_batch_first",
            {"activation": "gelu", "norm_first": True, "batch_first": True},
            {},
        ),
        (
            "tel_masks",
            {"batch_first": True},
            {"src_mask": causal_mask(L), "src_key_padding_mask": kpm},
        ),
        (
            "tel_causal_hint_norm_first",
            {"norm_first": True},
            {"src_mask": causal_mask(L), "is_causal": True},
        ),
        ("tel_no_bias_eps", {"bias": False, "layer_norm_eps": 1e-3}, {}),
    ]
    for name, init, forward in cases:
        shape = (n, L, d) if init.get("batch_first") else (L, n, d)
        module_case(name, tel, {**base, **init}, [normal(name, "x", *shape)], forward)


# ---- nn.utils: clip_grad_norm_ / clip_grad_value_ -----------------------------------------
def clip_cases() -> None:
    shapes = [(4, 3), (5,), (2, 2, 2)]
    settings = [(1.0, 2.0), (100.0, 2.0), (0.5, 1.0), (0.5, math.inf), (0.7, 3.0), (2.0, 0.5)]
    for max_norm, norm_type in settings:
        name = f"clip_norm_{max_norm}_{norm_type}"
        params = []
        for i, s in enumerate(shapes):
            p = torch.zeros(s, requires_grad=True)
            p.grad = torch.from_numpy(normal(name, f"g{i}", *s))
            STORE[f"{name}/g{i}"] = p.grad.numpy().copy()
            params.append(p)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        STORE[f"{name}/total"] = total.numpy()
        for i, p in enumerate(params):
            STORE[f"{name}/clipped{i}"] = p.grad.numpy()
        SPECS.append(
            {
                "name": name,
                "kind": "clip_norm",
                "max_norm": max_norm,
                "norm_type": norm_type,
                "n": len(shapes),
            }
        )
    name = "clip_value_0.3"
    params = []
    for i, s in enumerate(shapes):
        p = torch.zeros(s, requires_grad=True)
        p.grad = torch.from_numpy(normal(name, f"g{i}", *s))
        STORE[f"{name}/g{i}"] = p.grad.numpy().copy()
        params.append(p)
    torch.nn.utils.clip_grad_value_(params, 0.3)
    for i, p in enumerate(params):
        STORE[f"{name}/clipped{i}"] = p.grad.numpy()
    SPECS.append({"name": name, "kind": "clip_value", "clip_value": 0.3, "n": len(shapes)})


def loss_module_keys() -> dict[str, list[str]]:
    """State-dict keys of the loss modules that hold tensors (as buffers)."""
    w = torch.ones(3)
    return {
        "CrossEntropyLoss": list(torch.nn.CrossEntropyLoss(weight=w).state_dict()),
        "NLLLoss": list(torch.nn.NLLLoss(weight=w).state_dict()),
        "BCELoss": list(torch.nn.BCELoss(weight=w).state_dict()),
        "BCEWithLogitsLoss": list(torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=w).state_dict()),
        "MSELoss": list(torch.nn.MSELoss().state_dict()),
    }


def main() -> None:
    torch.use_deterministic_algorithms(True)
    loss_cases()
    sdpa_cases()
    mha_cases()
    tel_cases()
    clip_cases()
    names = [s["name"] for s in SPECS]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"duplicate case names: {sorted(dupes)}")
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "losses.npz", **STORE)
    write_meta(
        "losses", SOURCES, torch.__version__, cases=SPECS, loss_state_keys=loss_module_keys()
    )
    size = (FIXTURES / "losses.npz").stat().st_size
    print(
        f"wrote {len(STORE)} arrays for {len(SPECS)} cases ({size} bytes) "
        f"with torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
