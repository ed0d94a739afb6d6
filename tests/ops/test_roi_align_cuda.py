"""RoIAlign CUDA kernels (NVRTC): parity with torchvision on the GPU, one launch for all FPN
levels, no host synchronisation, CUDA-graph capture, their self-check against the portable path,
and the portable path itself on CUDA tensors. Skipped without a CUDA GPU."""

from __future__ import annotations

import time
import warnings

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from ops import _selfcheck, multilevel_roi_align, roi_align
from tests.ops.test_roi_align import (
    FPN_SCALES,
    TOL,
    fpn_features,
    image_boxes,
    random_rois,
    reference_dtype,
    torchvision_multiscale,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def kernels_forced(monkeypatch):
    """The kernels, unchecked: a kernel that failed its self-check must fail these tests, not
    pass them on the portable path. The tests of the check and of the portable path say so."""
    monkeypatch.setenv(_selfcheck.ENV_VAR, "cuda")


def cuda(t: torch.Tensor) -> torch.Tensor:
    return t.to("cuda")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2, -1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_forward_and_backward_match_torchvision(dtype, aligned, sampling_ratio, channels_last):
    gen = torch.Generator().manual_seed(sampling_ratio + 10 * aligned)
    x = torch.randn(2, 40, 12, 15, generator=gen, dtype=torch.float64)  # 40: a partial channel tile
    rois = cuda(random_rois(gen, 2, 30, 12 / 0.6, 15 / 0.6))
    grad = cuda(torch.randn(30, 40, 3, 4, generator=gen, dtype=torch.float64))
    ref_dtype = reference_dtype(dtype)

    ours_in = cuda(x).to(dtype)
    if channels_last:
        ours_in = ours_in.contiguous(memory_format=torch.channels_last)
    ours_in.requires_grad_()
    ours = roi_align(ours_in, rois.to(dtype), (3, 4), 0.6, sampling_ratio, aligned)
    (ours * grad.to(dtype)).sum().backward()

    ref_in = cuda(x).to(dtype).to(ref_dtype).requires_grad_()
    ref = tv_roi_align(ref_in, rois.to(dtype).to(ref_dtype), (3, 4), 0.6, sampling_ratio, aligned)
    (ref * grad.to(dtype).to(ref_dtype)).sum().backward()

    assert ours.is_cuda and ours.dtype == dtype and ours.is_contiguous()
    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    torch.testing.assert_close(ours_in.grad.to(ref_dtype), ref_in.grad, **TOL[dtype])
    assert ours_in.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_cuda_large_output_uses_several_bin_tiles():
    gen = torch.Generator().manual_seed(1)
    x = cuda(torch.randn(1, 33, 40, 40, generator=gen)).requires_grad_()  # the lane layout
    rois = cuda(random_rois(gen, 1, 8, 40, 40)).float()
    ours = roi_align(x, rois, (28, 28), 1.0, 2)  # 784 bins > 128 per tile
    ours.sum().backward()
    grad_ours, x.grad = x.grad, None
    ref = tv_roi_align(x, rois, (28, 28), 1.0, 2)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, **TOL[torch.float32])
    torch.testing.assert_close(grad_ours, x.grad, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 3, 31])
def test_cuda_few_channel_forward_matches_torchvision_as_mask_targets_use_it(dtype, channels):
    # gt masks pooled to 28 x 28 over proposals, adaptive sampling, unaligned (roi_heads' targets)
    gen = torch.Generator().manual_seed(channels)
    masks = cuda((torch.rand(4, channels, 120, 160, generator=gen) > 0.5).double())
    rois = cuda(random_rois(gen, 4, 64, 120, 160))
    ref_dtype = reference_dtype(dtype)
    ours = roi_align(masks.to(dtype), rois.to(dtype), (28, 28), 1.0, 0, False)
    ref = tv_roi_align(masks.to(dtype).to(ref_dtype), rois.to(dtype).to(ref_dtype), (28, 28), 1.0, 0, False)
    assert ours.shape == (64, channels, 28, 28) and ours.dtype == dtype
    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize(("channels_last", "read_nchw_in_place"), [(False, False), (False, True), (True, False)])
def test_cuda_multilevel_matches_multiscale_roi_align(monkeypatch, dtype, channels_last, read_nchw_in_place):
    from ops import _cuda

    monkeypatch.setattr(_cuda, "READ_NCHW_IN_PLACE", read_nchw_in_place)
    gen = torch.Generator().manual_seed(2)
    h, w = 128, 160
    base = [cuda(f) for f in fpn_features(gen, 3, 33, h, w, torch.float64)]
    boxes = [
        cuda(image_boxes(gen, 40, h, w)),
        cuda(torch.zeros(0, 4, dtype=torch.float64)),
        cuda(image_boxes(gen, 25, h, w)),
    ]
    grad = cuda(torch.randn(65, 33, 7, 7, generator=gen, dtype=torch.float64))
    ref_dtype = reference_dtype(dtype)

    ours_in = [f.to(dtype) for f in base]
    if channels_last:
        ours_in = [f.contiguous(memory_format=torch.channels_last) for f in ours_in]
    ours_in = [f.requires_grad_() for f in ours_in]
    ours = multilevel_roi_align(ours_in, [b.to(dtype) for b in boxes], 7, FPN_SCALES, 2)
    (ours * grad.to(dtype)).sum().backward()

    ref_in = [f.to(dtype).to(ref_dtype).requires_grad_() for f in base]
    ref = torchvision_multiscale(ref_in, [b.to(dtype).to(ref_dtype) for b in boxes], 7, 2, h, w)
    (ref * grad.to(dtype).to(ref_dtype)).sum().backward()

    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    for o, r in zip(ours_in, ref_in):
        torch.testing.assert_close(o.grad.to(ref_dtype), r.grad, **TOL[dtype])


def _multilevel_inputs(gen, n_boxes=300):
    h, w = 256, 320
    features = [cuda(f).requires_grad_() for f in fpn_features(gen, 2, 64, h, w, torch.float32)]
    boxes = [cuda(image_boxes(gen, n_boxes, h, w)).float(), cuda(image_boxes(gen, n_boxes // 2, h, w)).float()]
    return features, boxes


def test_cuda_multilevel_is_one_kernel_launch_for_all_levels():
    features, boxes = _multilevel_inputs(torch.Generator().manual_seed(3))
    multilevel_roi_align(features, boxes, 7, FPN_SCALES)  # compile and load first
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        multilevel_roi_align(features, boxes, 7, FPN_SCALES)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("roi_align_forward" in n for n in names) == 1


def test_cuda_multilevel_never_synchronises_with_the_host():
    features, boxes = _multilevel_inputs(torch.Generator().manual_seed(4))
    out = multilevel_roi_align(features, boxes, 7, FPN_SCALES)  # warm-up: compile and load
    out.sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = multilevel_roi_align(features, boxes, 7, FPN_SCALES)
        torch.autograd.backward(out, torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_multilevel_can_be_captured_in_a_cuda_graph():
    gen = torch.Generator().manual_seed(5)
    features, boxes = _multilevel_inputs(gen)
    features = [f.detach() for f in features]
    static_boxes = [b.clone() for b in boxes]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        multilevel_roi_align(features, static_boxes, 7, FPN_SCALES)  # warm-up on the side stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = multilevel_roi_align(features, static_boxes, 7, FPN_SCALES)
    new_boxes = [cuda(image_boxes(gen, len(b), 256, 320)).float() for b in boxes]
    for s, n in zip(static_boxes, new_boxes):
        s.copy_(n)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, multilevel_roi_align(features, new_boxes, 7, FPN_SCALES))


def test_cuda_empty_inputs_give_empty_results():
    x = cuda(torch.randn(1, 3, 5, 5)).requires_grad_()
    out = roi_align(x, cuda(torch.zeros(0, 5)), 2)
    assert out.shape == (0, 3, 2, 2)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    features = [cuda(torch.zeros(0, 3, 64 // s, 64 // s)) for s in (4, 8, 16, 32)]
    assert multilevel_roi_align(features, [], 7, FPN_SCALES).shape == (0, 3, 7, 7)


def test_cuda_opcheck_passes():
    gen = torch.Generator().manual_seed(6)
    x = cuda(torch.randn(2, 3, 6, 7, generator=gen)).requires_grad_()
    rois = cuda(random_rois(gen, 2, 5, 6, 7)).float()
    torch.library.opcheck(torch.ops.maskrcnn_ops.roi_align.default, (x, rois, 1.0, 2, 3, 2, False))
    features = [cuda(f).requires_grad_() for f in fpn_features(gen, 1, 2, 64, 64, torch.float32)]
    rois = cuda(torch.cat([torch.zeros(6, 1, dtype=torch.float64), image_boxes(gen, 6, 64, 64)], 1)).float()
    torch.library.opcheck(
        torch.ops.maskrcnn_ops.multilevel_roi_align.default, (features, rois, FPN_SCALES, 2, 2, 2, False, 224, 4)
    )


def test_compiled_kernels_are_cached_on_disk(tmp_path, monkeypatch):
    from ops import _cuda, _nvrtc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    index = torch.cuda.current_device()
    module = _nvrtc.load(
        _cuda.source() + "\n// cache test\n", "roi_align.cu", index, torch.cuda.get_device_capability(index)
    )
    assert module.function("roi_align_forward_f32") is not None
    assert list((tmp_path / "maskrcnn_ops").iterdir())


def test_cuda_nan_boxes_pool_zeros():
    x = cuda(torch.randn(1, 2, 9, 9))
    rois = cuda(torch.tensor([[0.0, 1, 1, 6, 6], [0, float("nan"), 2, 5, 5]]))
    out = roi_align(x, rois, 2, 1.0, 2, True)
    torch.testing.assert_close(out[0], tv_roi_align(x, rois[:1], 2, 1.0, 2, True)[0])
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_cuda_kernels_pass_their_self_check_in_well_under_a_second(monkeypatch):
    device = torch.device("cuda", torch.cuda.current_device())
    assert _selfcheck.check(device) is None  # compiles or loads the kernels first
    torch.cuda.synchronize()
    start = time.perf_counter()
    assert _selfcheck.check(device) is None
    assert time.perf_counter() - start < 0.5
    monkeypatch.setattr(_selfcheck, "_kernels_pass", {})
    monkeypatch.delenv(_selfcheck.ENV_VAR, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _selfcheck.kernels_serve(torch.device("cuda"))
    assert _selfcheck._kernels_pass == {device: True}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_portable_path_on_cuda_tensors_matches_torchvision(monkeypatch, dtype):
    # The reference is torchvision's CPU kernel: it rounds each step of a sampling point's
    # coordinate as the portable path's tensor ops do on the CPU. On CUDA, PyTorch's elementwise
    # kernels may fuse a multiply and an add, which moves a point by about an ulp of its coordinate.
    monkeypatch.setenv(_selfcheck.ENV_VAR, "portable")
    gen = torch.Generator().manual_seed(7)
    ref_dtype = reference_dtype(dtype)
    x = torch.randn(2, 40, 12, 15, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 2, 30, 12 / 0.6, 15 / 0.6).to(dtype)
    ours_in = cuda(x).to(dtype).requires_grad_()
    ours = roi_align(ours_in, cuda(rois), (3, 4), 0.6, -1, True)
    ours.sum().backward()
    ref_in = x.to(dtype).to(ref_dtype).requires_grad_()
    ref = tv_roi_align(ref_in, rois.to(ref_dtype), (3, 4), 0.6, -1, True)
    ref.sum().backward()
    assert ours.is_cuda and ours.dtype == dtype
    torch.testing.assert_close(ours.cpu().to(ref_dtype), ref, **TOL[dtype])
    torch.testing.assert_close(ours_in.grad.cpu().to(ref_dtype), ref_in.grad, **TOL[dtype])
    h, w = 128, 160
    base = fpn_features(gen, 2, 33, h, w, torch.float64)
    boxes = [image_boxes(gen, 20, h, w), image_boxes(gen, 12, h, w)]
    ours_in = [cuda(f).to(dtype).requires_grad_() for f in base]
    ours = multilevel_roi_align(ours_in, [cuda(b).to(dtype) for b in boxes], 7, FPN_SCALES, 2)
    ours.sum().backward()
    ref_in = [f.to(dtype).to(ref_dtype).requires_grad_() for f in base]
    ref = torchvision_multiscale(ref_in, [b.to(dtype).to(ref_dtype) for b in boxes], 7, 2, h, w)
    ref.sum().backward()
    # Boxes in image pixels, up to 200: a float32 ulp there (1.5e-5 px) is enough to move these
    # bins by up to 2.5e-5 and the maps' gradient by up to 7e-5 (measured with torchvision's CPU
    # kernel, every box corner moved one ulp up or down at random). Both GPU runs saw 2.3e-5.
    tol = TOL[dtype] if dtype != torch.float32 else dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.cpu().to(ref_dtype), ref, **tol)
    for o, r in zip(ours_in, ref_in):
        torch.testing.assert_close(o.grad.cpu().to(ref_dtype), r.grad, **tol)


def test_first_use_during_graph_capture_asks_for_a_warm_up(monkeypatch):
    monkeypatch.setattr(_selfcheck, "_kernels_pass", {})
    monkeypatch.delenv(_selfcheck.ENV_VAR, raising=False)
    x = cuda(torch.randn(1, 3, 8, 8))
    rois = cuda(torch.tensor([[0.0, 1, 1, 6, 6]]))
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="run it once before capturing"), torch.cuda.graph(graph):
        roi_align(x, rois, 2)
