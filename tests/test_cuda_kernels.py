"""Every CUDA kernel source compiles for sm_90 with NVRTC, here in CI, without a GPU or CuPy.

NVRTC comes from the `nvidia-cuda-nvrtc-cu12` wheel (the `dev` extra) and is driven
through ctypes, so a typo in a kernel fails CI, not the first run on a GPU. The sources
are the exact strings CuPy compiles (complete `extern "C"` kernels for cupy.RawModule),
built with no options beyond the architecture and the language standard: like CuPy, no
`-default-device`, so a helper missing `__device__` fails here as it would there.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path

import pytest

from engine.backends import cuda_kernels as ck


def _nvrtc() -> ctypes.CDLL:
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    assert spec is not None and spec.submodule_search_locations, (
        "libnvrtc not found: pip install -e '.[dev]' installs nvidia-cuda-nvrtc-cu12"
    )
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    libs = sorted(lib_dir.glob("libnvrtc.so*"))
    assert libs, f"no libnvrtc.so in {lib_dir}"
    return ctypes.CDLL(str(libs[0]))


def _compile(source: str, options: list[str]) -> tuple[int, str, str]:
    """(NVRTC result, compile log, PTX) of one program."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernels.cu", 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram failed: {rc}"
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = b""
        if rc == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value
        return rc, log.value.decode(errors="replace"), ptx.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.parametrize("std", ["c++11", "c++17"])
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_every_kernel_compiles_for_sm90(ctype: str, std: str) -> None:
    # the table CupyOps fills with NumPy must have the C struct's exact size
    check = (
        f"\nstatic_assert(sizeof(AdamTable) == {ck.ADAM_TABLE.itemsize}, "
        '"AdamTable does not match ADAM_TABLE");\n'
    )
    rc, log, ptx = _compile(
        ck.source(ctype) + check, ["--gpu-architecture=compute_90", f"-std={std}"]
    )
    assert rc == 0, f"{ctype} kernels do not compile ({std}):\n{log}"
    entries = set(re.findall(r"\.entry\s+(\w+)\(", ptx))
    assert entries == {f"{name}_{ctype}" for name in ck.KERNELS}


def test_a_broken_source_fails_with_its_log() -> None:
    rc, log, _ = _compile('extern "C" __global__ void k(float* a) { a[0] = nope; }', [])
    assert rc != 0 and "nope" in log


def test_the_adam_table_fits_the_kernel_argument_limit() -> None:
    # 4 KiB of kernel arguments: the table plus 3 pointers and 12 scalars of 8 bytes at most
    assert ck.ADAM_TABLE.itemsize + 15 * 8 <= 4096


def test_kernel_types_cover_float32_and_float64_only() -> None:
    assert ck.ctype_of("float32") == "float"
    assert ck.ctype_of("float64") == "double"
    assert ck.ctype_of("float16") is None
    assert ck.ctype_of("int64") is None


def test_bias_act_kernels_know_every_activation_linear_act_fuses() -> None:
    linear = importlib.import_module("engine.nn.functional.linear")
    assert set(ck.ACTIVATIONS) == set(linear.ACTIVATIONS)
    assert len(set(ck.ACTIVATIONS.values())) == len(ck.ACTIVATIONS)
    src = ck.source("float")
    for name, code in ck.ACTIVATIONS.items():
        assert f"#define ACT_{name.upper()} {code}\n" in src
