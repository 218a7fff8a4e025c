"""Training-step throughput: the engine beside PyTorch eager (and, for the MLPs, a
hand-written NumPy step: manual backprop, the zero-overhead limit for a NumPy engine).

    python benchmarks/train.py [--device cpu|cuda] [--workloads mlp,cnn] [--steps 20]

Workloads (same model, data and optimizer, AdamW lr 1e-3, on each side):
  mlp        784 -> 1024 -> 1024 -> 10, ReLU, batch 256
  mlp_small  64 -> 128 -> 128 -> 10, ReLU, batch 32
  cnn        [conv3x3 -> ReLU -> maxpool2] x 2 on 1x28x28, linear head, batch 64
  gpt        4 pre-norm transformer layers, d_model 256, 4 heads, seq 128, batch 16,
             vocab 96, causal, GELU, dropout 0
Prints a Markdown table of samples/s (median of repeats) with versions, BLAS and thread
counts; both sides run at their defaults, except that PyTorch gets NumPy's BLAS thread
count. Results go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine

# PyTorch is imported only in the child process that measures it (see measure()).
HAVE_TORCH = importlib.util.find_spec("torch") is not None

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WD = 1e-2


# ---- models, written once against a torch-like module namespace ----------------------------
def mlp_model(m: Any, sizes: tuple[int, ...]) -> Any:
    layers: list[Any] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(m.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(m.nn.ReLU())
    return m.nn.Sequential(*layers)


def cnn_model(m: Any) -> Any:
    nn_ = m.nn
    return nn_.Sequential(
        nn_.Conv2d(1, 32, 3, padding=1),
        nn_.ReLU(),
        nn_.MaxPool2d(2),
        nn_.Conv2d(32, 64, 3, padding=1),
        nn_.ReLU(),
        nn_.MaxPool2d(2),
        nn_.Flatten(),
        nn_.Linear(64 * 7 * 7, 10),
    )


def gpt_model(
    m: Any, vocab: int = 96, d: int = 256, heads: int = 4, layers: int = 4, seq: int = 128
) -> Any:
    nn_ = m.nn

    class GPT(nn_.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn_.Embedding(vocab, d)
            self.pos = nn_.Embedding(seq, d)
            self.blocks = nn_.ModuleList(
                [
                    nn_.TransformerEncoderLayer(
                        d,
                        heads,
                        4 * d,
                        dropout=0.0,
                        activation="gelu",
                        batch_first=True,
                        norm_first=True,
                    )
                    for _ in range(layers)
                ]
            )
            self.norm = nn_.LayerNorm(d)
            self.head = nn_.Linear(d, vocab)
            self.register_buffer(
                "mask",
                m.triu(m.full((seq, seq), float("-inf")), 1)
                if hasattr(m, "triu")
                else _causal(m, seq),
                persistent=False,
            )
            self.register_buffer("positions", m.arange(seq), persistent=False)

        def forward(self, idx: Any) -> Any:
            h = self.tok(idx) + self.pos(self.positions)
            for block in self.blocks:
                h = block(h, src_mask=self.mask)
            return self.head(self.norm(h))

    return GPT()


def _causal(m: Any, seq: int) -> Any:
    upper = np.triu(np.full((seq, seq), -np.inf, dtype=np.float32), 1)
    return m.tensor(upper)


# ---- one side's training step ---------------------------------------------------------------
def framework_step(
    m: Any, model: Any, flatten_logits: bool, dev: str = "cpu", amp: str | None = None
) -> Callable[[Any, Any], Any]:
    opt = m.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    loss_fn = m.nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad(set_to_none=True)
        with m.autocast(device_type=dev, dtype=getattr(m, amp or "float32"), enabled=bool(amp)):
            logits = model(x)
            if flatten_logits:
                logits = logits.reshape(-1, logits.shape[-1])
            loss = loss_fn(logits, y.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    return step


class NumpyMLP:
    """Forward, backward and AdamW by hand in NumPy: what an engine cannot beat on CPU."""

    def __init__(self, sizes: tuple[int, ...], rng: np.random.Generator) -> None:
        self.params: list[np.ndarray] = []
        for a, b in itertools.pairwise(sizes):
            bound = 1 / np.sqrt(a)
            self.params += [
                rng.uniform(-bound, bound, (b, a)).astype(np.float32),
                rng.uniform(-bound, bound, b).astype(np.float32),
            ]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        acts = [x]
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            w, b = self.params[2 * i], self.params[2 * i + 1]
            h = acts[-1] @ w.T
            h += b
            if i < n_layers - 1:
                np.maximum(h, 0, out=h)
            acts.append(h)
        logits = acts[-1]
        z = logits - logits.max(1, keepdims=True)
        e = np.exp(z)
        s = e.sum(1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(len(y)), y]))
        g = e / s
        g[np.arange(len(y)), y] -= 1
        g /= len(y)
        grads: list[np.ndarray] = [np.empty(0)] * len(self.params)
        for i in reversed(range(n_layers)):
            w = self.params[2 * i]
            grads[2 * i] = g.T @ acts[i]
            grads[2 * i + 1] = g.sum(0)
            if i:
                g = g @ w
                g *= acts[i] > 0
        self.t += 1
        bc1 = 1 - BETAS[0] ** self.t
        bc2_sqrt = np.sqrt(1 - BETAS[1] ** self.t)
        for p, gr, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            np.multiply(p, 1 - LR * WD, out=p)
            np.add(m, (1 - BETAS[0]) * (gr - m), out=m)
            np.multiply(v, BETAS[1], out=v)
            np.add(v, (1 - BETAS[1]) * gr * gr, out=v)
            denom = np.sqrt(v) / bc2_sqrt + EPS
            np.subtract(p, (LR / bc1) * m / denom, out=p)
        return loss


# ---- timing ---------------------------------------------------------------------------------
def samples_per_s(
    step: Callable[[], Any], batch: int, steps: int, repeats: int, sync: Callable[[], Any]
) -> float:
    """Median over repeats of samples/s; a repeat runs `steps` steps or, for steps that
    take well under a millisecond, as many as fill MIN_REPEAT_S, so tiny models are timed
    warm and over more than a few scheduler ticks."""
    start = time.perf_counter()
    warm = 0
    while warm < 3 or time.perf_counter() - start < MIN_REPEAT_S:
        step()
        warm += 1
    sync()
    per_repeat = max(steps, warm)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_repeat):
            step()
        sync()
        rates.append(batch * per_repeat / (time.perf_counter() - start))
    return statistics.median(rates)


MIN_REPEAT_S = 0.25


WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {"batch": 256, "sizes": (784, 1024, 1024, 10)},
    "mlp_small": {"batch": 32, "sizes": (64, 128, 128, 10)},
    "cnn": {"batch": 64},
    "gpt": {"batch": 16, "seq": 128, "vocab": 96, "d": 256, "heads": 4, "layers": 4},
    # GPU only: GPT-2 small's shape under bf16 autocast, the issue-4 reference workload
    "gpt_small": {
        "batch": 8,
        "seq": 1024,
        "vocab": 50304,
        "d": 768,
        "heads": 12,
        "layers": 12,
        "amp": "bfloat16",
        "cuda_only": True,
    },
}
PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16, the denominator of the MFU figures


def flops_per_token(name: str) -> float:
    """6 x parameters (forward + backward) plus attention's 12 * layers * d * seq; the
    parameters count the untied head, as the issue's 163M for gpt_small does."""
    w = WORKLOADS[name]
    d, layers, seq, vocab = w["d"], w["layers"], w["seq"], w["vocab"]
    params = layers * 12 * d * d + 2 * vocab * d + seq * d
    return 6 * params + 12 * layers * d * seq


def make_data(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    w = WORKLOADS[name]
    if name.startswith("mlp"):
        return (
            rng.standard_normal((w["batch"], w["sizes"][0])).astype(np.float32),
            rng.integers(0, 10, w["batch"]),
        )
    if name == "cnn":
        return (
            rng.standard_normal((w["batch"], 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, w["batch"]),
        )
    tokens = rng.integers(0, w["vocab"], (w["batch"], w["seq"] + 1))
    return tokens[:, :-1], tokens[:, 1:]


def build(m: Any, name: str) -> Any:
    if name.startswith("mlp"):
        return mlp_model(m, WORKLOADS[name]["sizes"])
    if name == "cnn":
        return cnn_model(m)
    w = WORKLOADS[name]
    return gpt_model(m, w["vocab"], w["d"], w["heads"], w["layers"], w["seq"])


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} "
        f"threads, {Path(i.get('filepath', '')).name})"
        for i in threadpool_info()
    )


def numpy_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            return int(info["num_threads"])
    return None


def measure_side(side: str, name: str, dev: str, steps: int, repeats: int) -> float:
    """samples/s of one workload on one side, in this process."""
    batch = WORKLOADS[name]["batch"]
    xh, yh = make_data(name, np.random.default_rng(0))
    if side == "numpy":
        np_model = NumpyMLP(WORKLOADS[name]["sizes"], np.random.default_rng(0))
        return samples_per_s(lambda: np_model.step(xh, yh), batch, steps, repeats, lambda: None)
    context: Any = contextlib.nullcontext()
    if side.startswith("torch"):
        import torch

        threads = numpy_threads()
        if threads:
            torch.set_num_threads(threads)  # the same thread count as NumPy's BLAS
        if side == "torch_math":  # PyTorch with its plain (math) attention backend
            from torch.nn.attention import SDPBackend, sdpa_kernel

            context = sdpa_kernel(SDPBackend.MATH)
        m: Any = torch
    else:
        m = engine
    m.manual_seed(0)
    model = build(m, name).to(dev)
    x, y = m.tensor(xh, device=dev), m.tensor(yh, device=dev)
    amp = WORKLOADS[name].get("amp")
    step = framework_step(m, model, name.startswith("gpt"), dev, amp)

    def sync() -> None:
        if dev == "cuda":
            m.cuda.synchronize()

    with context:
        return samples_per_s(lambda: step(x, y), batch, steps, repeats, sync)


def measure(name: str, args: argparse.Namespace) -> tuple[str, float, float | None, float | None]:
    """Each side in a process of its own: loading PyTorch's OpenMP and MKL beside NumPy's
    OpenBLAS slows whichever runs in the same process (measured: the engine's gpt
    backward 240 -> 300 ms once torch was imported)."""
    sides = ["engine"]
    if HAVE_TORCH:
        sides.append("torch")
        if WORKLOADS[name].get("amp"):
            sides.append("torch_math")
    if name.startswith("mlp") and args.device == "cpu":
        sides.append("numpy")
    rates: dict[str, float] = {}
    for side in sides:
        cmd = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--workloads",
            name,
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--repeats",
            str(args.repeats),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rates[side] = json.loads(out.strip().splitlines()[-1])["samples_per_s"]
    print(f"{name}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()), file=sys.stderr)
    if "torch_math" in rates:
        tokens = WORKLOADS[name]["seq"]
        mfu = {k: v * tokens * flops_per_token(name) / PEAK_BF16_FLOPS for k, v in rates.items()}
        print(
            f"{name}: MFU engine {mfu['engine']:.1%}, torch {mfu['torch']:.1%}; "
            f"engine / torch with math attention {rates['engine'] / rates['torch_math']:.2f}"
        )
    return name, rates["engine"], rates.get("torch"), rates.get("numpy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workloads", default=None, help="default: all that fit the device")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--side", choices=["engine", "torch", "torch_math", "numpy"], help=argparse.SUPPRESS
    )
    args = p.parse_args()
    dev = args.device
    names = (
        args.workloads.split(",")
        if args.workloads
        else [n for n, w in WORKLOADS.items() if dev == "cuda" or not w.get("cuda_only")]
    )
    if args.side:  # a child run: one side, one workload, the rate as JSON
        rate = measure_side(args.side, names[0], dev, args.steps, args.repeats)
        print(json.dumps({"samples_per_s": rate}))
        return
    rows = [measure(name, args) for name in names]

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:,.0f}"

    print(f"## train.py --device {dev}, {datetime.date.today().isoformat()}\n")
    print(
        f"- Python {platform.python_version()}, NumPy {np.__version__}, "
        f"torch {importlib.metadata.version('torch') if HAVE_TORCH else 'not installed'} "
        f"(threads set to NumPy's BLAS count: {numpy_threads()}), {os.cpu_count()} cores; "
        "each side in its own process"
    )
    print(f"- BLAS: {blas_info()}")
    print(
        f"- AdamW; median of {args.repeats} runs of {args.steps} steps (or as many as fill "
        f"{MIN_REPEAT_S} s) after a warm-up of at least 3 steps and {MIN_REPEAT_S} s\n"
    )
    print(
        "| workload | engine samples/s | torch samples/s | numpy step samples/s "
        "| engine/torch | engine/numpy |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, e, t, n in rows:
        print(
            f"| {name} | {fmt(e)} | {fmt(t)} | {fmt(n)} | "
            f"{'—' if not t else f'{e / t:.2f}'} | {'—' if not n else f'{e / n:.2f}'} |"
        )


if __name__ == "__main__":
    main()
