"""Between images and the network: resize + normalise + pad on the way in; boxes, keypoints and
masks back to each original image on the way out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageBatch:
    """Resized, normalised images zero-padded into one tensor."""

    tensor: Tensor  # (N, 3, H, W), H and W multiples of size_divisible
    image_sizes: Tensor  # (N, 2) int64 (height, width) of each resized image, on the device
    sizes: list[tuple[int, int]]  # the same, on the host
    original_sizes: list[tuple[int, int]]  # (height, width) of each input image

    @property
    def padded_size(self) -> tuple[int, int]:
        return (self.tensor.shape[-2], self.tensor.shape[-1])


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """Scale that brings the shorter side to ``min_size`` unless the longer would pass ``max_size``."""
    return min(min_size / min(height, width), max_size / max(height, width))


def preprocess(
    images: list[Tensor],
    min_size: int | Sequence[int],
    max_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    size_divisible: int = 32,
) -> ImageBatch:
    """(3, H_i, W_i) float images in [0, 1] -> one normalised batch.

    ``min_size`` is the shorter side of every image, or one per image (multi-scale training).

    Resizing is bilinear with the output size ``floor(side * scale)`` (torchvision's
    ``recompute_scale_factor=True``). Normalisation is affine per channel and bilinear weights sum
    to one, so the two commute: it runs at whichever resolution is smaller.
    """
    resized: list[Tensor] = []
    sides = [min_size] * len(images) if isinstance(min_size, int) else list(min_size)
    for image, side in zip(images, sides):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"expected a float image in [0, 1], got {image.dtype}")
        h, w = image.shape[-2:]
        scale = resize_scale(h, w, side, max_size)
        mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
        std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
        if scale >= 1:
            image = (image - mean_t) / std_t
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]
        if scale < 1:
            image = (image - mean_t) / std_t
        resized.append(image)

    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in resized]
    stride = size_divisible
    padded_h = -(-max(s[0] for s in sizes) // stride) * stride
    padded_w = -(-max(s[1] for s in sizes) // stride) * stride
    tensor = resized[0].new_zeros(len(resized), 3, padded_h, padded_w)
    for i, image in enumerate(resized):
        tensor[i, :, : image.shape[-2], : image.shape[-1]].copy_(image)
    return ImageBatch(
        tensor=tensor,
        image_sizes=torch.tensor(sizes, dtype=torch.int64, device=tensor.device).view(-1, 2),
        sizes=sizes,
        original_sizes=[(int(im.shape[-2]), int(im.shape[-1])) for im in images],
    )


def rescale_ratios(from_size: tuple[int, int], to_size: tuple[int, int], device: torch.device) -> Tensor:
    """(2,) ``(ratio_x, ratio_y)`` mapping input pixels of ``from_size`` to ``to_size``.

    Computed in float32, as torchvision does, so that boxes (and the integer boxes of mask
    pasting) agree with it bit for bit even in a float64 model.
    """
    to_t = torch.tensor(to_size, dtype=torch.float32, device=device)
    from_t = torch.tensor(from_size, dtype=torch.float32, device=device)
    ratio_y, ratio_x = (to_t / from_t).unbind()
    return torch.stack((ratio_x, ratio_y))


def rescale_boxes(boxes: Tensor, ratios: Tensor) -> Tensor:
    """(N, 4) boxes scaled by ``ratios`` (2,) = ``(ratio_x, ratio_y)``."""
    return boxes * ratios.to(boxes.dtype).repeat(2)


def rescale_keypoints(keypoints: Tensor, ratios: Tensor) -> Tensor:
    """(N, K, 3) ``(x, y, v)`` with x and y scaled by ``ratios`` (2,)."""
    scale = torch.cat((ratios.to(keypoints.dtype), ratios.new_ones(1, dtype=keypoints.dtype)))
    return keypoints * scale


def _bilinear_paste_matrix(starts: Tensor, ends: Tensor, length: int, mask_size: int, dtype: torch.dtype) -> Tensor:
    """Rows of bilinear resampling (align_corners=False) of a ``mask_size`` mask onto the integer
    pixel span ``[start, end]`` of each box, along one image axis of ``length`` pixels.

    Returns:
        (N, length, mask_size) weights; zero for pixels outside the span.
    """
    pixels = torch.arange(length, device=starts.device)
    span = (ends - starts + 1).clamp(min=1).to(dtype)  # (N,)
    offset = (pixels[None, :] - starts[:, None]).to(dtype)  # (N, length)
    src = ((offset + 0.5) * (mask_size / span)[:, None] - 0.5).clamp(min=0)
    first = src.floor()
    frac = src - first
    first = first.long().clamp(max=mask_size - 1)
    second = (first + 1).clamp(max=mask_size - 1)
    inside = ((pixels[None, :] >= starts[:, None]) & (pixels[None, :] <= ends[:, None])).to(dtype)
    weights = torch.zeros(*src.shape, mask_size, dtype=dtype, device=starts.device)
    weights.scatter_add_(2, first[..., None], ((1 - frac) * inside)[..., None])
    weights.scatter_add_(2, second[..., None], (frac * inside)[..., None])
    return weights


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], padding: int = 1) -> Tensor:
    """Resample each box-frame mask into the image (the paper's paste-back), all at once.

    Semantics are torchvision's ``paste_masks_in_image``: the M x M mask is zero-padded by
    ``padding`` and its box grown to match, the box is truncated to integer pixel corners
    ``(x1, y1)`` - ``(x2, y2)`` inclusive, and the mask is bilinearly resized onto that span. The
    resizing is separable, so it is two batched matrix products instead of one interpolation
    and one copy per mask.

    Args:
        masks: (N, 1, M, M) mask probabilities in each box's frame.
        boxes: (N, 4) boxes in image pixels.
        image_size: (H, W).
    Returns:
        (N, 1, H, W) probabilities, zero outside each box.
    """
    height, width = image_size
    num, _, size, _ = masks.shape
    dtype = masks.dtype if masks.dtype == torch.float64 else torch.float32
    if num == 0:
        return masks.new_zeros(0, 1, height, width)
    padded = F.pad(masks[:, 0].to(dtype), (padding,) * 4)  # (N, M + 2p, M + 2p)
    size += 2 * padding
    scale = size / (size - 2 * padding)
    boxes = boxes.to(dtype)
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    ctr_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    ctr_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    # truncation towards zero, as torchvision's .to(int64)
    x1, x2 = (ctr_x - half_w).long(), (ctr_x + half_w).long()
    y1, y2 = (ctr_y - half_h).long(), (ctr_y + half_h).long()
    rows = _bilinear_paste_matrix(y1, y2, height, size, dtype)  # (N, H, S)
    cols = _bilinear_paste_matrix(x1, x2, width, size, dtype)  # (N, W, S)
    with torch.autocast(masks.device.type, enabled=False):  # float32 even under mixed precision
        return torch.bmm(rows, torch.bmm(padded, cols.transpose(1, 2)))[:, None]
