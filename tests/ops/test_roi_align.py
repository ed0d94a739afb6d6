"""RoIAlign operators (ops/): parity with torchvision's roi_align and MultiScaleRoIAlign, forward
and backward, hand-computed cases, gradcheck, opcheck, torch.compile, and the CUDA source
compiling to PTX (no GPU needed). The tests that run the CUDA kernels are in
test_roi_align_cuda.py.
"""

from __future__ import annotations

import ctypes
import re
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import initLevelMapper

import ops
from ops import multilevel_roi_align, roi_align
from ops.roi_align import map_levels

TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}
FPN_SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def random_rois(gen: torch.Generator, n_images: int, k: int, height: float, width: float) -> torch.Tensor:
    """(k, 5) rois over an image of ``height x width``: most inside, some off the map, zero-sized,
    one pixel wide or larger than the map."""
    x1 = torch.rand(k, generator=gen) * width * 1.3 - 0.15 * width
    y1 = torch.rand(k, generator=gen) * height * 1.3 - 0.15 * height
    w = torch.rand(k, generator=gen) * width * 0.6
    h = torch.rand(k, generator=gen) * height * 0.6
    w[0::7] = 0.0  # zero width
    h[1::7] = 0.0  # zero height
    w[2::7], h[2::7] = width * 1.5, height * 1.7  # larger than the map
    x1[3::7] = width + 2.0  # entirely off the map
    w[4::7] = 0.6  # thinner than a pixel
    batch = torch.randint(0, n_images, (k,), generator=gen).to(torch.float32)
    return torch.stack([batch, x1, y1, x1 + w, y1 + h], 1).to(torch.float64)


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    """torchvision's reference runs in float32 for half types (we accumulate in float32)."""
    return dtype if dtype in (torch.float64, torch.float32) else torch.float32


# --- hand-computed ---------------------------------------------------------------------------


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize(("aligned", "first_row"), [(False, [7.5, 8.0, 8.5, 9.0]), (True, [4.5, 5.0, 5.5, 6.0])])
def test_arange_map_gives_hand_computed_first_row(aligned, first_row, sampling_ratio):
    # value(y, x) = 5y + x is linear, so bilinear sampling returns it exactly at each point
    x = torch.arange(25.0).view(1, 1, 5, 5)
    out = roi_align(x, torch.tensor([[0.0, 1, 1, 3, 3]]), 4, 1.0, sampling_ratio, aligned)
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(first_row))
    torch.testing.assert_close(out[0, 0, 1], torch.tensor(first_row) + 2.5)  # next row: y += 0.5


@pytest.mark.parametrize("path", ["gather", "separable"])
def test_zero_height_box_gives_zeros_and_zero_gradient(monkeypatch, path):
    monkeypatch.setattr(ops._separable, "PATH", path)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 4.0, 6.0, 4.0]], dtype=torch.float64)  # y1 == y2
    out = roi_align(x, rois, 2, 1.0, -1, aligned=True)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    torch.testing.assert_close(out, tv_roi_align(x.detach(), rois, 2, 1.0, -1, True))


def test_points_outside_the_map_contribute_zero():
    x = torch.ones(1, 1, 4, 4)
    off_map = roi_align(x, torch.tensor([[0.0, 10, 10, 14, 14]]), 2, 1.0, 2)
    assert torch.equal(off_map, torch.zeros_like(off_map))
    # points in [-1, 0) are clamped to the border, not dropped
    border = roi_align(x, torch.tensor([[0.0, -0.9, -0.9, 0.1, 0.1]]), 1, 1.0, 1)
    assert border.item() == 1.0


def test_boxes_as_list_equal_boxes_with_batch_index():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, 11, generator=gen)
    b0, b1 = torch.tensor([[1.0, 1, 5, 6]]), torch.tensor([[0.0, 2, 8, 7], [3, 3, 4, 4]])
    rois = torch.tensor([[0.0, 1, 1, 5, 6], [1, 0, 2, 8, 7], [1, 3, 3, 4, 4]])
    torch.testing.assert_close(roi_align(x, [b0, b1], (3, 2), 0.5), roi_align(x, rois, (3, 2), 0.5))


# --- parity with torchvision.ops.roi_align ---------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2, -1])
def test_forward_and_backward_match_torchvision(dtype, aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(sampling_ratio + 10 * aligned)
    x = torch.randn(2, 5, 12, 15, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 2, 30, 12 / 0.6, 15 / 0.6)
    grad = torch.randn(30, 5, 3, 4, generator=gen, dtype=torch.float64)
    ref_dtype = reference_dtype(dtype)

    ours_in = x.to(dtype).requires_grad_()
    ours = roi_align(ours_in, rois.to(dtype), (3, 4), 0.6, sampling_ratio, aligned)
    (ours * grad.to(dtype)).sum().backward()

    ref_in = x.to(dtype).to(ref_dtype).requires_grad_()
    ref = tv_roi_align(ref_in, rois.to(dtype).to(ref_dtype), (3, 4), 0.6, sampling_ratio, aligned)
    (ref * grad.to(dtype).to(ref_dtype)).sum().backward()

    assert ours.dtype == dtype and ours_in.grad.dtype == dtype
    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    torch.testing.assert_close(ours_in.grad.to(ref_dtype), ref_in.grad, **TOL[dtype])


def mask_like_rois(gen: torch.Generator, n_images: int, height: int, width: int) -> torch.Tensor:
    """(12, 5) rois as mask targets see them: boxes over most of a full-size map (sampling grids
    of many points per bin), some partly off it, one larger than it, one of zero height."""
    k = 12
    x1 = torch.rand(k, generator=gen) * width * 0.3 - 0.1 * width
    y1 = torch.rand(k, generator=gen) * height * 0.3 - 0.1 * height
    w = (0.5 + 0.6 * torch.rand(k, generator=gen)) * width
    h = (0.5 + 0.6 * torch.rand(k, generator=gen)) * height
    x1[0], y1[0], w[0], h[0] = -0.3 * width, -0.2 * height, 1.6 * width, 1.5 * height
    h[1] = 0.0
    batch = torch.randint(0, n_images, (k,), generator=gen).to(torch.float32)
    return torch.stack([batch, x1, y1, x1 + w, y1 + h], 1).to(torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(("channels", "layout"), [(1, "nchw"), (3, "channels_last")])
def test_few_channels_with_large_adaptive_grids_match_torchvision(dtype, aligned, channels, layout):
    # the mask-target regime (gt masks pooled onto boxes, adaptive sampling): the separable path
    gen = torch.Generator().manual_seed(19 + aligned)
    x = torch.randn(2, channels, 90, 120, generator=gen, dtype=torch.float64)
    rois = mask_like_rois(gen, 2, 90, 120)
    grad = torch.randn(12, channels, 7, 6, generator=gen, dtype=torch.float64)
    ref_dtype = reference_dtype(dtype)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    ours_in = x.to(dtype).contiguous(memory_format=fmt).requires_grad_()
    ours = roi_align(ours_in, rois.to(dtype), (7, 6), 1.0, -1, aligned)
    (ours * grad.to(dtype)).sum().backward()

    ref_in = x.to(dtype).to(ref_dtype).requires_grad_()
    ref = tv_roi_align(ref_in, rois.to(dtype).to(ref_dtype), (7, 6), 1.0, -1, aligned)
    (ref * grad.to(dtype).to(ref_dtype)).sum().backward()

    assert ours.dtype == dtype and ours_in.grad.dtype == dtype
    assert ours_in.grad.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    torch.testing.assert_close(ours_in.grad.to(ref_dtype), ref_in.grad, **TOL[dtype])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2, -1])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_separable_path_matches_torchvision_for_every_kind_of_box(monkeypatch, aligned, sampling_ratio, layout):
    # every RoI on the separable path: zero-sized, thin, off the map and larger-than-map boxes
    monkeypatch.setattr(ops._separable, "PATH", "separable")
    gen = torch.Generator().manual_seed(20 + sampling_ratio + 10 * aligned)
    x = torch.randn(2, 4, 12, 15, generator=gen, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    rois = random_rois(gen, 2, 30, 12 / 0.6, 15 / 0.6)
    grad = torch.randn(30, 4, 3, 4, generator=gen, dtype=torch.float64)
    ours = roi_align(x, rois, (3, 4), 0.6, sampling_ratio, aligned)
    (grad_ours,) = torch.autograd.grad(ours, x, grad)
    ref = tv_roi_align(x, rois, (3, 4), 0.6, sampling_ratio, aligned)
    (grad_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    torch.testing.assert_close(grad_ours, grad_ref, **TOL[torch.float64])


def test_rois_split_between_the_two_paths_match_torchvision():
    # huge adaptive grids go separable and small boxes on a wide map go gather, in one call
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(2, 64, 40, 400, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [
            [0, 2.0, 1, 390, 38],
            [1, -20, -5, 420, 45],
            [1, 100, 10, 104, 14],
            [0, 300, 20, 303, 22],
            [0, 10, 2, 380, 30],
            [1, 50, 5, 52, 9],
        ],
        dtype=torch.float64,
    )
    gather, separable = ops._separable.split_paths(
        *_sampling_of(x, rois, (5, 5), -1, False), (5, 5), 64, None, fixed_grid=False
    )
    assert gather.tolist() == [2, 3, 5] and [r.tolist() for _, r in separable] == [[0, 1, 4]]
    grad = torch.randn(6, 64, 5, 5, generator=gen, dtype=torch.float64)
    ours = roi_align(x, rois, 5, 1.0, -1)
    (grad_ours,) = torch.autograd.grad(ours, x, grad)
    ref = tv_roi_align(x, rois, 5, 1.0, -1)
    (grad_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    torch.testing.assert_close(grad_ours, grad_ref, **TOL[torch.float64])


def _sampling_of(x: torch.Tensor, rois: torch.Tensor, pooled, sampling_ratio: int, aligned: bool):
    """The PyTorch path's (Sampling, LevelGeometry) for rois on a single map."""
    dtype = ops._sampling.compute_dtype(x.dtype)
    geom = ops._sampling.level_geometry([x], [1.0], None, rois[:, 0].to(torch.int64), dtype)
    return ops._sampling.sampling(rois, geom, pooled, sampling_ratio, aligned, dtype), geom


def test_mask_targets_take_the_separable_path_and_fpn_pooling_the_gather_path():
    # the cost model's choice in the two regimes bench/roi_align.py measures
    gen = torch.Generator().manual_seed(22)
    masks = torch.zeros(4, 1, 480, 640)
    boxes = mask_like_rois(gen, 4, 480, 640)
    _, separable = ops._separable.split_paths(
        *_sampling_of(masks, boxes, (28, 28), -1, False), (28, 28), 1, None, fixed_grid=False
    )
    assert [r.tolist() for _, r in separable] == [list(range(12))]
    p2 = torch.zeros(1, 256, 200, 304)
    boxes = torch.cat([torch.zeros(100, 1), image_boxes(gen, 100, 800, 1216) / 4], 1)
    gather, separable = ops._separable.split_paths(
        *_sampling_of(p2, boxes, (7, 7), 2, False), (7, 7), 256, None, fixed_grid=True
    )
    assert gather is None and separable == []


def test_bfloat16_matches_torchvision_in_float32():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 10, 10, generator=gen).to(torch.bfloat16)
    rois = random_rois(gen, 1, 20, 10, 10).to(torch.bfloat16)
    ours = roi_align(x, rois, 3, 1.0, 2)
    assert ours.dtype == torch.bfloat16
    ref = tv_roi_align(x.float(), rois.float(), 3, 1.0, 2)
    torch.testing.assert_close(ours.float(), ref, **TOL[torch.bfloat16])


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "sliced"])
def test_non_contiguous_inputs_match_torchvision(layout):
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 6, 11, 13, generator=gen, dtype=torch.float64)
    if layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":
        x = base.permute(0, 1, 3, 2)
    else:
        x = base[:, ::2, 1:, :]
    rois_full = random_rois(gen, 2, 16, 20, 20)
    rois = rois_full[:, [0, 1, 2, 3, 4, 0]][:, :5]  # a non-contiguous view of the same values
    x_ours = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    if layout != "channels_last":
        x_ours = x.detach().requires_grad_()
    grad = torch.randn(16, x.shape[1], 2, 3, generator=gen, dtype=torch.float64)
    ours = roi_align(x_ours, rois, (2, 3), 0.5, 2, True)
    (ours * grad).sum().backward()
    x_ref = x.detach().contiguous().requires_grad_()
    ref = tv_roi_align(x_ref, rois.contiguous(), (2, 3), 0.5, 2, True)
    (ref * grad).sum().backward()
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **TOL[torch.float64])
    if layout == "channels_last":  # the gradient keeps the input's memory format
        assert x_ours.grad.is_contiguous(memory_format=torch.channels_last)


def test_pytorch_path_for_other_devices_matches_torchvision(monkeypatch):
    # the index_select / index_add_ path that serves devices without embedding_bag (e.g. MPS)
    monkeypatch.setattr(ops._sampling, "fused_gather", lambda device: False)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 9, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = random_rois(gen, 2, 12, 18, 20)
    ours = roi_align(x, rois, 3, 0.5, -1, True)
    ours.sum().backward()
    grad_ours, x.grad = x.grad, None
    ref = tv_roi_align(x, rois, 3, 0.5, -1, True)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    torch.testing.assert_close(grad_ours, x.grad, **TOL[torch.float64])


def test_adaptive_sampling_of_huge_boxes_is_chunked_and_exact(monkeypatch):
    # a tiny chunk budget forces many chunks, each with a different number of points per RoI
    monkeypatch.setattr(ops._cpu, "_ENTRIES_PER_CHUNK", 500)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 2, 30, 30, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 1, 9, 30, 30)
    torch.testing.assert_close(roi_align(x, rois, 2, 1.0, -1), tv_roi_align(x, rois, 2, 1.0, -1), **TOL[torch.float64])


@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(False, 2), (True, -1), (True, 3)])
def test_rows_no_roi_reads_are_never_read(monkeypatch, aligned, sampling_ratio):
    # the CPU path transposes only the map rows some RoI reads; poison the rest of its workspace
    workspace = ops._cpu._workspace

    def poisoned(numel, dtype, device):
        return workspace(numel, dtype, device).fill_(float("nan"))

    monkeypatch.setattr(ops._cpu, "_workspace", poisoned)
    gen = torch.Generator().manual_seed(16)
    x = torch.randn(3, 2, 40, 12, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 3, 25, 40, 12)
    rois[:, 2:5:2] = rois[:, 2:5:2] * 0.3 + 12  # boxes in a band of rows, some off the map
    torch.testing.assert_close(
        roi_align(x, rois, 3, 1.0, sampling_ratio, aligned),
        tv_roi_align(x, rois, 3, 1.0, sampling_ratio, aligned),
        **TOL[torch.float64],
    )
    features = fpn_features(gen, 2, 3, 128, 96, torch.float64)
    boxes = [image_boxes(gen, 6, 128, 96) * 0.3, image_boxes(gen, 3, 128, 96) * 0.2 + 60]
    ours = multilevel_roi_align(features, boxes, 4, FPN_SCALES, sampling_ratio, aligned)
    levels = initLevelMapper(2, 5)(boxes)
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i), dtype=torch.float64), b], 1) for i, b in enumerate(boxes)]
    )
    ref = torch.stack(
        [
            tv_roi_align(features[lv], rois[i : i + 1], 4, FPN_SCALES[lv], sampling_ratio, aligned)[0]
            for i, lv in enumerate(levels.tolist())
        ]
    )
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])


def test_nan_boxes_pool_zeros_and_leave_other_boxes_alone():
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(1, 2, 9, 9, generator=gen)
    rois = torch.tensor([[0.0, 1, 1, 6, 6], [0, float("nan"), 2, 5, 5], [0, 2, 2, float("inf"), 5]])
    for sampling_ratio in (2, -1):
        out = roi_align(x, rois, 2, 1.0, sampling_ratio, True)
        torch.testing.assert_close(out[0], tv_roi_align(x, rois[:1], 2, 1.0, sampling_ratio, True)[0])
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_gradcheck_in_float64(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.6, 4.2, 3.1], [1, 1.5, -0.7, 6.4, 5.8], [1, 2.0, 2.0, 2.0, 3.5]], dtype=torch.float64
    )
    fn = lambda t: roi_align(t, rois, 2, 1.0, sampling_ratio, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 3])
def test_separable_path_gradcheck_in_float64(monkeypatch, aligned, sampling_ratio):
    monkeypatch.setattr(ops._separable, "PATH", "separable")
    gen = torch.Generator().manual_seed(23)
    x = torch.randn(1, 1, 8, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(  # inside, partly off and larger than the map, zero height
        [[0, 0.4, 0.7, 9.2, 7.1], [0, -2.5, -1.7, 7.4, 10.8], [0, 3.0, 4.0, 9.0, 4.0]], dtype=torch.float64
    )
    fn = lambda t: roi_align(t, rois, (3, 2), 1.0, sampling_ratio, aligned)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_double_backward_gradgradcheck_in_float64():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.6, 4.2, 3.1], [0, 2.0, 2.0, 2.0, 3.5]], dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda t: roi_align(t, rois, 2, 1.0, -1, True), (x,))


def test_empty_inputs_give_empty_results():
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert roi_align(torch.zeros(0, 3, 5, 5), [], 2).shape == (0, 3, 2, 2)
    assert roi_align(x, [torch.zeros(0, 4)], 2).shape == (0, 3, 2, 2)


# --- multi-level --------------------------------------------------------------------------


def fpn_features(gen, n_images: int, channels: int, height: int, width: int, dtype) -> list[torch.Tensor]:
    """P2..P5 of an image of ``height x width`` (multiples of 32)."""
    return [
        torch.randn(n_images, channels, height // s, width // s, generator=gen, dtype=torch.float64).to(dtype)
        for s in (4, 8, 16, 32)
    ]


def image_boxes(gen, k: int, height: int, width: int) -> torch.Tensor:
    """(k, 4) boxes spread over all FPN levels (sides from 2 to 1.5x the image), a few off it; the
    first is larger than the image and the second tiny, clamped to the coarsest and finest level."""
    side = torch.exp(torch.rand(k, 2, generator=gen) * 6.5) + 1.0
    side[:2] = torch.tensor([[10.0 * width, 8.0 * height], [0.5, 1.5]])[: min(k, 2)]
    extent = torch.tensor([width, height], dtype=torch.float32)
    centre = torch.rand(k, 2, generator=gen) * extent * 1.2 - 0.1 * extent
    return torch.cat([centre - side / 2, centre + side / 2], 1).to(torch.float64)


def torchvision_multiscale(features, boxes, output_size, sampling_ratio, height, width):
    names = [f"p{i}" for i in range(len(features))]
    pooler = MultiScaleRoIAlign(names, output_size, sampling_ratio)
    return pooler(OrderedDict(zip(names, features)), boxes, [(height, width)] * features[0].shape[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize(("output_size", "sampling_ratio"), [(7, 2), (5, -1), (4, 0)])
def test_multilevel_matches_multiscale_roi_align(dtype, output_size, sampling_ratio):
    gen = torch.Generator().manual_seed(output_size)
    h, w = 128, 160
    base = fpn_features(gen, 3, 4, h, w, torch.float64)
    boxes = [image_boxes(gen, 40, h, w), torch.zeros(0, 4, dtype=torch.float64), image_boxes(gen, 25, h, w)]
    grad = torch.randn(65, 4, output_size, output_size, generator=gen, dtype=torch.float64)
    ref_dtype = reference_dtype(dtype)

    ours_in = [f.to(dtype).requires_grad_() for f in base]
    ours = multilevel_roi_align(ours_in, [b.to(dtype) for b in boxes], output_size, FPN_SCALES, sampling_ratio)
    (ours * grad.to(dtype)).sum().backward()

    ref_in = [f.to(dtype).to(ref_dtype).requires_grad_() for f in base]
    ref = torchvision_multiscale(ref_in, [b.to(dtype).to(ref_dtype) for b in boxes], output_size, sampling_ratio, h, w)
    (ref * grad.to(dtype).to(ref_dtype)).sum().backward()

    assert ours.shape == (65, 4, output_size, output_size) and ours.dtype == dtype
    torch.testing.assert_close(ours.to(ref_dtype), ref, **TOL[dtype])
    for o, r in zip(ours_in, ref_in):
        torch.testing.assert_close(o.grad.to(ref_dtype), r.grad, **TOL[dtype])


def test_multilevel_aligned_pools_each_box_on_its_torchvision_level():
    gen = torch.Generator().manual_seed(8)
    h, w = 128, 128
    features = fpn_features(gen, 2, 3, h, w, torch.float64)
    boxes = [image_boxes(gen, 30, h, w), image_boxes(gen, 10, h, w)]
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i), dtype=torch.float64), b], 1) for i, b in enumerate(boxes)]
    )
    levels = initLevelMapper(2, 5)(boxes)
    ref = torch.stack(
        [
            tv_roi_align(features[lv], rois[i : i + 1], 3, FPN_SCALES[lv], 2, aligned=True)[0]
            for i, lv in enumerate(levels.tolist())
        ]
    )
    ours = multilevel_roi_align(features, boxes, 3, FPN_SCALES, 2, aligned=True)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])


def test_level_mapping_matches_torchvision_level_mapper():
    # boundaries: sides 112, 224, 448 start levels 3, 4, 5; tiny boxes clamp to P2, huge to P5
    sides = torch.tensor([1.0, 56, 111.9, 112, 223.9, 224, 447, 448, 896, 5000], dtype=torch.float64)
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1)
    gen = torch.Generator().manual_seed(9)
    boxes = torch.cat([boxes, image_boxes(gen, 200, 800, 1216)])
    rois = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.float64), boxes], 1)
    for dtype in (torch.float64, torch.float32):
        expected = initLevelMapper(2, 5)([boxes.to(dtype)])
        assert torch.equal(map_levels(rois.to(dtype), FPN_SCALES), expected)
    assert map_levels(rois[:10], FPN_SCALES).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_multilevel_degenerate_box_pools_zeros_like_torchvision():
    gen = torch.Generator().manual_seed(10)
    features = fpn_features(gen, 1, 2, 64, 64, torch.float64)
    boxes = [torch.tensor([[30.0, 30, 20, 40], [5, 5, 40, 40]], dtype=torch.float64)]  # x2 < x1 first
    ours = multilevel_roi_align(features, boxes, 2, FPN_SCALES)
    ref = torchvision_multiscale(features, boxes, 2, 2, 64, 64)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    assert torch.equal(ours[0], torch.zeros_like(ours[0]))


def test_multilevel_gradcheck_in_float64():
    gen = torch.Generator().manual_seed(11)
    features = [f.requires_grad_() for f in fpn_features(gen, 2, 1, 32, 32, torch.float64)[:3]]
    boxes = [
        torch.tensor([[1.0, 2, 9, 7], [0, 0, 31, 31]], dtype=torch.float64),
        torch.tensor([[4.0, 4, 20, 28]], dtype=torch.float64),
    ]
    fn = lambda *f: multilevel_roi_align(list(f), boxes, 2, FPN_SCALES[:3], canonical_scale=16)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(features))


def test_multilevel_with_no_boxes_or_no_images_is_empty():
    gen = torch.Generator().manual_seed(12)
    features = [f.requires_grad_() for f in fpn_features(gen, 2, 3, 64, 64, torch.float32)]
    out = multilevel_roi_align(features, [torch.zeros(0, 4), torch.zeros(0, 4)], 7, FPN_SCALES)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert all(torch.equal(f.grad, torch.zeros_like(f)) for f in features)
    no_images = [torch.zeros(0, 3, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    assert multilevel_roi_align(no_images, [], 7, FPN_SCALES).shape == (0, 3, 7, 7)


def test_multilevel_levels_in_mixed_dtypes_give_the_first_levels_dtype():
    # autocast can leave FPN levels in different dtypes
    gen = torch.Generator().manual_seed(18)
    features = fpn_features(gen, 1, 2, 64, 64, torch.float32)
    boxes = [image_boxes(gen, 8, 64, 64).float()]
    mixed = [features[0], features[1].double(), features[2].half(), features[3]]
    expected = multilevel_roi_align([f.float() for f in mixed], boxes, 3, FPN_SCALES)
    ours = multilevel_roi_align(mixed, boxes, 3, FPN_SCALES)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected)


def test_multilevel_single_level_is_roi_align():
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(1, 2, 16, 16, generator=gen)
    boxes = [image_boxes(gen, 8, 64, 64).float()]
    torch.testing.assert_close(multilevel_roi_align([x], boxes, 3, [0.25]), roi_align(x, boxes, 3, 0.25, 2))


# --- operator registration -------------------------------------------------------------------


def test_opcheck_passes_for_all_operators():
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = random_rois(gen, 2, 5, 6, 7)
    torch.library.opcheck(torch.ops.maskrcnn_ops.roi_align.default, (x, rois, 1.0, 2, 3, 2, False))
    grad = torch.randn(5, 3, 2, 3, generator=gen, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.maskrcnn_ops.roi_align_backward.default,
        (grad, rois, 1.0, 2, 3, -1, True, 2, 3, 6, 7, False),
    )
    features = [f.requires_grad_() for f in fpn_features(gen, 1, 2, 64, 64, torch.float64)]
    rois = torch.cat([torch.zeros(6, 1, dtype=torch.float64), image_boxes(gen, 6, 64, 64)], 1)
    torch.library.opcheck(
        torch.ops.maskrcnn_ops.multilevel_roi_align.default, (features, rois, FPN_SCALES, 2, 2, 2, False, 224, 4)
    )
    grad = torch.randn(6, 2, 2, 2, generator=gen, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.maskrcnn_ops.multilevel_roi_align_backward.default,
        (
            grad,
            rois,
            FPN_SCALES,
            2,
            2,
            2,
            False,
            224,
            4,
            1,
            2,
            [16, 8, 4, 2],
            [16, 8, 4, 2],
            [False, True, False, False],
        ),
    )


def test_torch_compile_runs_forward_and_backward():
    gen = torch.Generator().manual_seed(15)
    features = [f.requires_grad_() for f in fpn_features(gen, 1, 2, 64, 64, torch.float32)]
    boxes = [image_boxes(gen, 6, 64, 64).float()]

    def head(feats, bxs):
        return multilevel_roi_align(feats, bxs, 3, FPN_SCALES).relu().sum()

    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    compiled(features, boxes).backward()
    grads = [f.grad.clone() for f in features]
    for f in features:
        f.grad = None
    head(features, boxes).backward()
    for g, f in zip(grads, features):
        torch.testing.assert_close(g, f.grad)


# --- CUDA source (no GPU needed) -------------------------------------------------------------


@pytest.mark.skipif(torch.version.cuda is None, reason="CPU-only torch build: no NVRTC in the wheels")
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_cuda_kernels_compile_to_ptx(arch):
    from ops import _cuda

    ptx = _cuda.compile_ptx(arch).decode()
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    directions = ("forward", "forward_few", "backward")
    expected = {f"roi_align_{d}_{t}" for d in directions for t in ("f32", "f64", "f16", "bf16")}
    assert entries == expected
    # the host's ctypes mirror of `struct Maps` is exactly as large as the kernel's parameter
    size = re.search(r"roi_align_forward_f32_param_0\[(\d+)\]", ptx)
    assert size and int(size.group(1)) == ctypes.sizeof(_cuda._Maps)
