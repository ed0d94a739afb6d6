"""The CUDA kernels of ops/roi_align.cu run on the CPU: the source is compiled as C++ against a
small emulation of the CUDA features it uses (one std::thread per CUDA thread, a barrier for
__syncthreads, std::atomic_ref for atomicAdd), and ops/_cuda.py's launchers drive it in place of
cuLaunchKernel. This checks the kernels' indexing, level mapping, tiling and the host code
against torchvision on machines without a GPU. It says nothing about speed or about the GPU's
memory model (test_roi_align_cuda.py does, on a GPU). Skipped without g++ (C++20).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from ops import _cuda, _nvrtc
from ops.roi_align import level_range
from tests.ops.test_roi_align import (
    FPN_SCALES,
    TOL,
    fpn_features,
    image_boxes,
    random_rois,
    reference_dtype,
    torchvision_multiscale,
)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to emulate CUDA")

SHIM = r"""
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
struct dim3_ { int x, y, z; };
inline thread_local dim3_ blockIdx, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(x)
#define __restrict__
inline std::barrier<>* g_barrier;
inline void __syncthreads() { g_barrier->arrive_and_wait(); }
template <class T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
using std::min;
using std::max;
struct __half { _Float16 v; };
struct __nv_bfloat16 { unsigned short bits; };
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half_rn(float f) { return {(_Float16)f}; }
inline float __bfloat162float(__nv_bfloat16 h) {
  unsigned u = unsigned(h.bits) << 16; float f; std::memcpy(&f, &u, 4); return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  unsigned u; std::memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1);
  return {(unsigned short)(u >> 16)};
}
"""

LAUNCHER = r"""
#include "roi_align.cu"
// all threads of a block run concurrently; blocks run one after another
template <class F, class... Args>
void run(int gx, int gy, F f, Args... args) {
  std::barrier<> bar(LANES * WARPS);
  g_barrier = &bar;
  std::vector<std::thread> threads;
  for (int ty = 0; ty < WARPS; ++ty)
    for (int tx = 0; tx < LANES; ++tx)
      threads.emplace_back([=, &bar] {
        threadIdx = {tx, ty, 0};
        for (int bx = 0; bx < gx; ++bx)
          for (int by = 0; by < gy; ++by) {
            blockIdx = {bx, by, 0};
            f(args...);
            bar.arrive_and_wait();
          }
      });
  for (auto& t : threads) t.join();
}
#define EMULATE(name, T, A, CONST)                                                           \
  extern "C" void emulate_##name(int gx, int gy, Maps m, const A* r, int c, int ph, int pw, \
                                 int sr, int al, CONST T* o) {                               \
    run(gx, gy, name, m, r, c, ph, pw, sr, al, o);                                          \
  }
"""

# kernel suffix -> (element type, accumulator type), as ROI_ALIGN_KERNELS instantiates them
KERNEL_TYPES = {
    "f32": ("float", "float"),
    "f64": ("double", "double"),
    "f16": ("__half", "float"),
    "bf16": ("__nv_bfloat16", "float"),
}
KERNELS = [
    f"roi_align_{direction}_{suffix}" for direction in ("forward", "forward_few", "backward") for suffix in KERNEL_TYPES
]


def build_emulator(folder: Path, source: str | None = None, kernels: Sequence[str] = KERNELS) -> ctypes.CDLL:
    """The kernels of ``source`` (default: ops/roi_align.cu) compiled as C++ against the CUDA
    emulation, one ``emulate_<kernel>(grid_x, grid_y, kernel arguments...)`` per name in
    ``kernels``. Skips the test where g++ lacks C++20's <barrier>."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shim.h").write_text(SHIM)
    emulate = []
    for name in kernels:
        direction, suffix = name.removeprefix("roi_align_").rsplit("_", 1)
        element, accumulator = KERNEL_TYPES[suffix]
        emulate.append(f"EMULATE({name}, {element}, {accumulator}, {'const' if direction == 'backward' else ''})")
    (folder / "launcher.cpp").write_text(LAUNCHER + "\n".join(emulate) + "\n")
    for header in ("cuda_fp16.h", "cuda_bf16.h"):
        (folder / header).write_text("")
    if source is not None:
        (folder / "roi_align.cu").write_text(source)
    flags = "-std=c++20 -O1 -shared -fPIC".split()
    includes = ["-include", str(folder / "shim.h"), "-I", str(folder), "-I", str(_cuda.SOURCE_PATH.parent)]
    output = ["-o", str(folder / "emulator.so"), "-lpthread"]
    command = ["g++", *flags, *includes, str(folder / "launcher.cpp"), *output]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if "barrier" in result.stderr and "No such file" in result.stderr:
            pytest.skip("g++ without C++20 <barrier>")
        pytest.fail(f"roi_align.cu does not compile as emulated C++:\n{result.stderr}")
    return ctypes.CDLL(str(folder / "emulator.so"))


def emulated_launcher(emulator: ctypes.CDLL) -> Callable[..., None]:
    """A stand-in for ``ops._cuda._launch`` that runs the kernel in ``emulator`` on the CPU."""

    def launch(name, device, grid, args):
        try:
            kernel = getattr(emulator, f"emulate_{name}")
        except AttributeError:  # as the driver answers for a kernel the module lacks
            raise _nvrtc.NvrtcError(
                f"cuModuleGetFunction({name}) failed: CUDA error 500 (named symbol not found)"
            ) from None
        kernel(ctypes.c_int(grid[0]), ctypes.c_int(grid[1]), *args)

    return launch


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> ctypes.CDLL:
    return build_emulator(tmp_path_factory.mktemp("cuda_emulation"))


@pytest.fixture
def emulated_launch(emulator, monkeypatch):
    monkeypatch.setattr(_cuda, "_launch", emulated_launcher(emulator))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("aligned", "sampling_ratio", "channels_last"), [(False, 2, False), (True, -1, True), (False, 0, True)]
)
def test_emulated_kernels_match_torchvision(emulated_launch, dtype, aligned, sampling_ratio, channels_last):
    gen = torch.Generator().manual_seed(sampling_ratio)
    channels = 40  # a full and a partial tile of 32 channels
    x = torch.randn(2, channels, 12, 15, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 2, 10, 12 / 0.6, 15 / 0.6).to(dtype)
    ref_dtype = reference_dtype(dtype)
    maps = x.to(dtype)
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)

    ours = _cuda.forward([maps], rois, [0.6], None, 224, 4, (3, 4), sampling_ratio, aligned)
    ref_in = x.to(dtype).to(ref_dtype).requires_grad_()
    ref = tv_roi_align(ref_in, rois.to(ref_dtype), (3, 4), 0.6, sampling_ratio, aligned)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(dtype)
    ref.backward(grad.to(ref_dtype))
    (grad_in,) = _cuda.backward(
        grad, rois, [0.6], None, 224, 4, 2, channels, [12], [15], [channels_last], (3, 4), sampling_ratio, aligned
    )

    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    torch.testing.assert_close(grad_in.to(ref_dtype), ref_in.grad, **TOL[dtype])
    assert grad_in.dtype == dtype and grad_in.is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("channels", "channels_last"), [(1, False), (3, True), (31, False)])
def test_emulated_few_channel_forward_matches_torchvision_as_mask_targets_use_it(
    emulated_launch, dtype, channels, channels_last
):
    # Mask R-CNN's mask targets: gt masks (one channel) pooled to 28 x 28 over the proposals, with
    # adaptive sampling and unaligned boxes; 784 outputs a channel take several blocks of 256
    gen = torch.Generator().manual_seed(channels)
    masks = (torch.rand(3, channels, 50, 60, generator=gen) > 0.5).double()
    rois = random_rois(gen, 3, 9, 50, 60)
    maps = masks.to(dtype)
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)  # read where it is, by its strides
    ours = _cuda.forward([maps], rois.to(dtype), [1.0], None, 224, 4, (28, 28), 0, False)
    ref_dtype = reference_dtype(dtype)
    ref = tv_roi_align(masks.to(dtype).to(ref_dtype), rois.to(dtype).to(ref_dtype), (28, 28), 1.0, 0, False)
    assert ours.shape == (9, channels, 28, 28) and ours.dtype == dtype
    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", ["nchw", "sliced"])
def test_emulated_kernels_read_nchw_maps_in_place(emulated_launch, monkeypatch, dtype, layout):
    monkeypatch.setattr(_cuda, "READ_NCHW_IN_PLACE", True)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 70, 14, 15, generator=gen, dtype=torch.float64).to(dtype)
    if layout == "sliced":
        x = x[:, ::2, 1:, :]  # 35 channels, strides of no standard layout
    rois = random_rois(gen, 2, 10, 13, 15).to(dtype)
    ours = _cuda.forward([x], rois, [1.0], None, 224, 4, (3, 3), 2, True)
    torch.testing.assert_close(ours, tv_roi_align(x.contiguous(), rois, 3, 1.0, 2, True), **TOL[dtype])


def test_emulated_kernels_tile_outputs_larger_than_a_bin_tile(emulated_launch):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 33, 20, 20, generator=gen, dtype=torch.float64, requires_grad=True)  # the lane layout
    rois = random_rois(gen, 1, 3, 20, 20)
    ours = _cuda.forward([x.detach()], rois, [1.0], None, 224, 4, (13, 11), 2, False)  # 143 bins
    ref = tv_roi_align(x, rois, (13, 11), 1.0, 2)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref.backward(grad)
    (grad_in,) = _cuda.backward(grad, rois, [1.0], None, 224, 4, 1, 33, [20], [20], [False], (13, 11), 2, False)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    torch.testing.assert_close(grad_in, x.grad, **TOL[torch.float64])


@pytest.mark.parametrize(
    ("dtype", "channels_last"), [(torch.float64, False), (torch.float32, True), (torch.float16, False)]
)
def test_emulated_multilevel_kernel_matches_multiscale_roi_align(emulated_launch, dtype, channels_last):
    gen = torch.Generator().manual_seed(2)
    h, w = 128, 160
    base = fpn_features(gen, 3, 33, h, w, torch.float64)
    boxes = [image_boxes(gen, 14, h, w), torch.zeros(0, 4, dtype=torch.float64), image_boxes(gen, 10, h, w)]
    boxes[0][0] = torch.tensor([30.0, 30, 20, 40])  # x2 < x1: a NaN level, pools zeros
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i), dtype=torch.float64), b], 1) for i, b in enumerate(boxes)]
    ).to(dtype)
    ref_dtype = reference_dtype(dtype)
    maps = [f.to(dtype) for f in base]
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]

    ours = _cuda.forward(maps, rois, FPN_SCALES, level_range(FPN_SCALES), 224, 4, (7, 7), 2, False)
    ref_in = [f.to(dtype).to(ref_dtype).requires_grad_() for f in base]
    ref = torchvision_multiscale(ref_in, [b.to(dtype).to(ref_dtype) for b in boxes], 7, 2, h, w)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(dtype)
    ref.backward(grad.to(ref_dtype))
    grads = _cuda.backward(
        grad,
        rois,
        FPN_SCALES,
        level_range(FPN_SCALES),
        224,
        4,
        3,
        33,
        [m.shape[2] for m in maps],
        [m.shape[3] for m in maps],
        [channels_last] * 4,
        (7, 7),
        2,
        False,
    )

    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    for g, r in zip(grads, ref_in):
        torch.testing.assert_close(g.to(ref_dtype), r.grad, **TOL[dtype])


@pytest.mark.parametrize("channels", [2, 40])  # the few-channel and the lane layout
def test_emulated_kernels_pool_zeros_for_nan_boxes(emulated_launch, channels):
    x = torch.randn(1, channels, 9, 9, dtype=torch.float64)
    rois = torch.tensor([[0.0, 1, 1, 6, 6], [0, float("nan"), 2, 5, 5]], dtype=torch.float64)
    out = _cuda.forward([x], rois, [1.0], None, 224, 4, (2, 2), 2, True)
    torch.testing.assert_close(out[0], tv_roi_align(x, rois[:1], 2, 1.0, 2, True)[0])
    assert torch.equal(out[1], torch.zeros_like(out[1]))
