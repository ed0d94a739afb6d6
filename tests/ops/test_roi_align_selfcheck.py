"""The CUDA kernels' self-check (ops/_selfcheck.py), on the CPU: the kernels of ops/roi_align.cu run
under the C++ emulation of test_roi_align_cuda_emulated.py, as written or with one fault
compiled in, and the self-check must trust the first, refuse each of the others with one warning
line, and leave RoIAlign to the portable path. ``MASKRCNN_ROI_ALIGN`` forces either path. The
check on a real GPU is in test_roi_align_cuda.py.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from ops import _cpu, _cuda, _nvrtc, _sampling, _selfcheck, _separable
from ops._levels import map_levels
from ops.roi_align import _multilevel_roi_align_cuda, _roi_align_backward_cuda, _roi_align_cuda
from tests.ops.test_roi_align import FPN_SCALES, TOL, fpn_features, image_boxes, random_rois
from tests.ops.test_roi_align_cuda_emulated import build_emulator, emulated_launcher

CPU = torch.device("cpu")
# the self-check runs the float32 and float16 kernels only
CHECKED_KERNELS = [f"roi_align_{d}_{t}" for d in ("forward", "forward_few", "backward") for t in ("f32", "f16")]

# one fault each, as a code change that a person could make: (text in roi_align.cu, replacement)
FAULTS = {
    "forward forgets to average": ("return acc / roi.count;", "return acc;"),
    "few-channel forward pools channel 0 for all": (
        "roi.image * m.stride_n[l] + c * roi.stride_c;\n    mean",
        "roi.image * m.stride_n[l];\n    mean",
    ),
    "backward swaps two taps": ("atomicAdd(row_lo + b, wylo * wxhi * g);", "atomicAdd(row_lo + b, wylo * wxlo * g);"),
    "float16 halves its output": ("return __float2half_rn(v); }", "return __float2half_rn(v * 0.5f); }"),
    "levels one too coarse": (
        "return (int)k - m.first_level;",
        "return min((int)k + 1, m.last_level) - m.first_level;",
    ),
}

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to emulate CUDA")


def with_fault(fault: str) -> str:
    text, replacement = FAULTS[fault]
    source = _cuda.source()
    assert source.count(text) == 1, f"the fault {fault!r} no longer applies to roi_align.cu"
    return source.replace(text, replacement)


class Launches:
    """``ops._cuda._launch`` running emulated kernels, and the names of the kernels it launched."""

    def __init__(self, emulator) -> None:
        self.names: list[str] = []
        self._launch = emulated_launcher(emulator)

    def __call__(self, name, device, grid, args) -> None:
        self.names.append(name)
        self._launch(name, device, grid, args)


@pytest.fixture(autouse=True)
def unchecked_devices(monkeypatch):
    """Every test starts in auto mode with no device checked yet."""
    monkeypatch.setattr(_selfcheck, "_kernels_pass", {})
    monkeypatch.delenv(_selfcheck.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    """``build(fault=None, kernels=CHECKED_KERNELS)``: the emulated kernels, built once each."""
    built = {}

    def build(fault: str | None = None, kernels: tuple[str, ...] = tuple(CHECKED_KERNELS)):
        if (fault, kernels) not in built:
            source = None if fault is None else with_fault(fault)
            built[fault, kernels] = build_emulator(tmp_path_factory.mktemp("kernels"), source, kernels)
        return built[fault, kernels]

    return build


@pytest.fixture
def run_kernels(emulators, monkeypatch):
    """``run_kernels(fault=None, kernels=...)`` makes ``ops._cuda`` launch those emulated kernels;
    returns the launch record."""

    def use(fault: str | None = None, kernels: tuple[str, ...] = tuple(CHECKED_KERNELS)) -> Launches:
        launches = Launches(emulators(fault, kernels))
        monkeypatch.setattr(_cuda, "_launch", launches)
        return launches

    return use


def decide(device: torch.device = CPU) -> tuple[bool, list[str]]:
    """``kernels_serve(device)`` and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        serve = _selfcheck.kernels_serve(device)
    return serve, [str(w.message) for w in caught]


@needs_gxx
def test_kernels_that_agree_with_the_portable_path_serve_the_device_checked_once(run_kernels):
    launches = run_kernels()
    assert decide() == (True, [])
    assert sorted(set(launches.names)) == sorted(CHECKED_KERNELS)
    launched = len(launches.names)
    assert decide() == (True, [])  # the answer is kept: no second check
    assert len(launches.names) == launched


@needs_gxx
@pytest.mark.parametrize(
    ("fault", "where"),
    [
        ("forward forgets to average", "(float32, one map, forward)"),
        ("backward swaps two taps", "(float32, one map, backward)"),
        ("float16 halves its output", "(float16, one map, forward)"),
        ("levels one too coarse", "(float32, 4 levels, forward)"),
        ("few-channel forward pools channel 0 for all", "(float32, 3 channels, forward)"),
    ],
)
def test_kernels_with_wrong_numbers_fail_the_check_with_one_warning(run_kernels, fault, where):
    launches = run_kernels(fault)
    serve, warned = decide()
    assert not serve
    assert len(warned) == 1 and "\n" not in warned[0]
    assert "differ from the portable path by up to" in warned[0] and where in warned[0]
    assert "on cpu;" in warned[0] and "using the portable PyTorch path on this device" in warned[0]
    launched = len(launches.names)
    assert decide() == (False, [])  # decided once: no second check, no second warning
    assert len(launches.names) == launched


@needs_gxx
def test_a_kernel_the_module_lacks_fails_the_check(run_kernels):
    run_kernels(kernels=tuple(k for k in CHECKED_KERNELS if k != "roi_align_backward_f16"))
    serve, warned = decide()
    assert not serve and len(warned) == 1
    assert "failed (float16, one map): NvrtcError: cuModuleGetFunction(roi_align_backward_f16)" in warned[0]


@needs_gxx
@pytest.mark.skipif(torch.version.cuda is None, reason="CPU-only torch build: no NVRTC in the wheels")
def test_a_kernel_that_does_not_compile_fails_the_check_with_the_log_on_one_line(run_kernels, monkeypatch, tmp_path):
    # NVRTC compiles the source first, as ops._cuda does before any launch (no GPU needed for that)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    launches = run_kernels()
    broken = _cuda.source().replace("acc / roi.count;", "acc / roi.cnt;")
    monkeypatch.setattr(_cuda, "source", lambda: broken)

    def compile_then_launch(name, device, grid, args):
        _nvrtc.compile_cached(_cuda.source(), _cuda.SOURCE_PATH.name, "compute_80")
        launches(name, device, grid, args)

    monkeypatch.setattr(_cuda, "_launch", compile_then_launch)
    serve, warned = decide()
    assert not serve and len(warned) == 1 and "\n" not in warned[0]
    assert "failed (float32, one map): NvrtcError: compiling roi_align.cu for compute_80 failed" in warned[0]
    assert "cnt" in warned[0]  # the compiler's complaint, from the log
    assert launches.names == []


@needs_gxx
def test_ops_give_the_portable_result_where_the_kernels_fail_the_check(run_kernels):
    run_kernels("forward forgets to average")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 12, 15, generator=gen)
    rois = random_rois(gen, 2, 12, 24, 30).float()
    with pytest.warns(UserWarning, match="differ from the portable path"):
        out = _roi_align_cuda(x, rois, 0.5, 3, 4, -1, True)
    torch.testing.assert_close(out, tv_roi_align(x, rois, (3, 4), 0.5, -1, True), **TOL[torch.float32])
    grad = torch.randn(out.shape, generator=gen)
    x_ref = x.clone().requires_grad_()
    tv_roi_align(x_ref, rois, (3, 4), 0.5, -1, True).backward(grad)
    grad_in = _roi_align_backward_cuda(grad, rois, 0.5, 3, 4, -1, True, 2, 5, 12, 15, False)
    torch.testing.assert_close(grad_in, x_ref.grad, **TOL[torch.float32])
    features = fpn_features(gen, 1, 3, 64, 64, torch.float32)
    boxes = torch.cat([torch.zeros(8, 1), image_boxes(gen, 8, 64, 64).float()], 1)
    levels = map_levels(boxes, FPN_SCALES)
    expected = _cpu.forward(features, boxes, FPN_SCALES, levels, (3, 3), 2, False)
    torch.testing.assert_close(
        _multilevel_roi_align_cuda(features, boxes, FPN_SCALES, 3, 3, 2, False, 224, 4), expected
    )


@needs_gxx
def test_ops_run_the_kernels_where_they_pass_the_check_in_the_layout_for_their_channels(run_kernels):
    launches = run_kernels()
    gen = torch.Generator().manual_seed(2)
    rois = random_rois(gen, 1, 6, 9, 9).float()
    # under a warp's 32 lanes of channels, a thread per output; else a lane per channel
    for channels, kernel in ((3, "roi_align_forward_few_f32"), (40, "roi_align_forward_f32")):
        x = torch.randn(1, channels, 9, 9, generator=gen)
        _roi_align_cuda(x, rois, 1.0, 2, 2, 2, False)  # the first time: the check, then the call
        launched = len(launches.names)
        out = _roi_align_cuda(x, rois, 1.0, 2, 2, 2, False)
        assert launches.names[launched:] == [kernel]
        torch.testing.assert_close(out, tv_roi_align(x, rois, 2, 1.0, 2, False), **TOL[torch.float32])


@needs_gxx
def test_forcing_the_portable_path_skips_the_check(run_kernels, monkeypatch):
    launches = run_kernels()
    monkeypatch.setenv("MASKRCNN_ROI_ALIGN", "portable")
    assert decide() == (False, [])
    assert launches.names == []


@needs_gxx
def test_forcing_the_kernels_trusts_them_unchecked(run_kernels, monkeypatch):
    launches = run_kernels("forward forgets to average")
    monkeypatch.setenv("MASKRCNN_ROI_ALIGN", " CUDA ")
    assert decide() == (True, [])
    assert launches.names == []
    x = torch.ones(1, 1, 8, 8)
    out = _roi_align_cuda(x, torch.tensor([[0.0, 0, 0, 8, 8]]), 1.0, 1, 1, 2, False)
    assert out.item() == 4.0  # the faulty kernel's sum of 2 x 2 points, not their mean
    monkeypatch.setenv("MASKRCNN_ROI_ALIGN", "auto")  # the same kernels, checked
    serve, warned = decide()
    assert not serve and len(warned) == 1


def test_the_checks_cases_keep_every_sampling_point_off_the_maps_validity_border():
    # RoIAlign jumps where a sampling point crosses -1 or the map's extent (it stops counting)
    # and where a box crosses an FPN level boundary. A point exactly there lands on either side
    # by one rounding: nvcc's fused multiply-adds and PyTorch's separate ops round differently,
    # so such a case would fail correct kernels (the first GPU run did, by 3.9 at y == H).
    for case in _selfcheck._cases(CPU):
        rois = case.rois.double()
        levels = map_levels(case.rois, case.scales, 28, 4) if case.multilevel else None
        geom = _sampling.level_geometry(case.features, case.scales, levels, rois[:, 0].long(), torch.float64)
        s = _sampling.sampling(rois, geom, case.pooled, case.sampling_ratio, case.aligned, torch.float64)
        for start, bin_size, grid, bins, extent in (
            (s.y1, s.bin_h, s.grid_h, case.pooled[0], geom.height),
            (s.x1, s.bin_w, s.grid_w, case.pooled[1], geom.width),
        ):
            for roi in range(rois.shape[0]):
                point = torch.arange(int(grid[roi]), dtype=torch.float64)
                bin_index = torch.arange(bins, dtype=torch.float64)[:, None]
                coords = _sampling.axis_points(start[roi], bin_size[roi], bin_index, int(grid[roi]), point)
                borders = torch.tensor([-1.0, float(extent[roi])], dtype=torch.float64)
                margin = (coords.reshape(-1, 1) - borders).abs().min()
                assert margin > 1e-2, f"{case.name}: RoI {roi} samples {float(margin):.2g} px from a border"
        if case.multilevel:
            size = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).sqrt()
            level = 4 + torch.log2(size / 28)
            assert ((level - level.round()).abs() > 1e-2).all(), f"{case.name}: a box lies on a level boundary"


def test_an_unknown_mode_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MASKRCNN_ROI_ALIGN", "gpu")
    with pytest.raises(ValueError, match=r"MASKRCNN_ROI_ALIGN='gpu': expected one of auto, cuda, portable"):
        _selfcheck.kernels_serve(CPU)


@pytest.mark.parametrize("path", [None, "separable"])
@pytest.mark.parametrize("fused", [True, False])
def test_the_portable_path_makes_every_tensor_on_its_inputs_device(monkeypatch, path, fused):
    # What lets it serve CUDA tensors: with the default device set to "meta", a tensor made
    # without naming a device lands on meta, and mixing it with the CPU inputs raises.
    monkeypatch.setattr(_separable, "PATH", path)
    monkeypatch.setattr(_sampling, "fused_gather", lambda device: fused)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 12, 15, generator=gen)
    rois = random_rois(gen, 2, 10, 24, 30).float()
    features = fpn_features(gen, 2, 3, 64, 64, torch.float32)
    boxes = torch.cat([torch.arange(10.0)[:, None] % 2, image_boxes(gen, 10, 64, 64).float()], 1)
    for sampling_ratio in (2, -1):
        grad = torch.randn(10, 3, 3, 4, generator=gen)
        with torch.device("meta"):
            out = _cpu.forward([x], rois, [0.5], None, (3, 4), sampling_ratio, True)
            (grad_in,) = _cpu.backward(grad, [x], rois, [0.5], None, (3, 4), sampling_ratio, True)
            levels = map_levels(boxes, FPN_SCALES)
            pooled = _cpu.forward(features, boxes, FPN_SCALES, levels, (3, 4), sampling_ratio, False)
            grads = _cpu.backward(grad, features, boxes, FPN_SCALES, levels, (3, 4), sampling_ratio, False)
        assert out.device == grad_in.device == pooled.device == CPU and all(g.device == CPU for g in grads)
        torch.testing.assert_close(out, tv_roi_align(x, rois, (3, 4), 0.5, sampling_ratio, True), **TOL[torch.float32])
