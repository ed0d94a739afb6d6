"""Training throughput: our Mask R-CNN against torchvision's, same architecture, same weights, same
batches, measured in the same run (target on CUDA: ours >= 1.5x torchvision's images/s).

    python bench/train.py [--arch maskrcnn_resnet18_fpn_small,maskrcnn_resnet50_fpn] [--batch-size 2]
                          [--steps 8] [--device cpu,cuda]

A step is forward (losses), backward and an SGD update, images already decoded in memory (the
data loader runs beside the model in both cases). torchvision's model is assembled from its own
modules to the same configuration (for the small architecture: ResNet-18 with GroupNorm, a
128-channel FPN with GroupNorm, the same heads and sampling sizes) and gets our initial weights
(the state dict layouts are the same). Each side trains as it would by default: ours in
channels-last memory format, torchvision's in its default; float16 autocast with a gradient
scaler on CUDA for both. Steps alternate between the two models and the median is reported, so
background load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision  # noqa: E402
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN  # noqa: E402
from torchvision.models.detection.backbone_utils import BackboneWithFPN  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: E402
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign  # noqa: E402

from model.backbone import group_norm  # noqa: E402
from model.builders import config_for  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.detector import MaskRCNN  # noqa: E402
from model.synthetic import make_sample  # noqa: E402


def torchvision_model(config: ModelConfig) -> nn.Module:
    """torchvision's Mask R-CNN (with a keypoint head when the config has one) built to ``config``."""
    if config.variant != "v1":
        raise ValueError("the benchmark assembles v1 models only")
    if config.backbone_norm == "gn":
        body = torchvision.models.resnet.__dict__[f"resnet{config.backbone_depth}"](norm_layer=group_norm)
    else:
        body = torchvision.models.resnet.__dict__[f"resnet{config.backbone_depth}"](
            norm_layer=partial(torchvision.ops.FrozenBatchNorm2d, eps=config.frozen_bn_eps)
        )
    if config.backbone_width != 64:
        # torchvision's ResNet has fixed widths; rebuild its stages at ours with its own _make_layer
        w = config.backbone_width
        body.inplanes = w
        body.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        body.bn1 = body._norm_layer(w)
        block = type(body.layer1[0])
        blocks = [len(getattr(body, f"layer{i}")) for i in range(1, 5)]
        for i, (scale, count) in enumerate(zip((1, 2, 4, 8), blocks), start=1):
            setattr(body, f"layer{i}", body._make_layer(block, w * scale, count, stride=1 if i == 1 else 2))
    fpn_norm = group_norm if config.norm == "gn" else None
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][: config.trainable_backbone_layers]
    if config.trainable_backbone_layers == 5:
        stages.append("bn1")
    for name, parameter in body.named_parameters():
        parameter.requires_grad_(any(name.startswith(stage) for stage in stages))
    expansion = 1 if config.backbone_depth < 50 else 4
    widths = [config.backbone_width * scale * expansion for scale in (1, 2, 4, 8)]
    backbone = BackboneWithFPN(
        body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, widths, config.fpn_channels, norm_layer=fpn_norm
    )
    channels = config.fpn_channels
    anchors = AnchorGenerator(
        tuple((s,) for s in config.anchor_sizes), (config.anchor_aspect_ratios,) * len(config.anchor_sizes)
    )
    mask_norm = group_norm if config.norm == "gn" else None
    model = TorchvisionMaskRCNN(
        backbone,
        num_classes=None,
        min_size=config.min_size,
        max_size=config.max_size,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, len(config.anchor_aspect_ratios)),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_head=TwoMLPHead(channels * 49, config.box_head_dim),
        box_predictor=FastRCNNPredictor(config.box_head_dim, config.num_classes),
        box_batch_size_per_image=config.box_batch_size_per_image,
        mask_head=MaskRCNNHeads(channels, [config.mask_head_channels] * 4, 1, norm_layer=mask_norm),
        mask_predictor=MaskRCNNPredictor(config.mask_head_channels, config.mask_head_channels, config.num_classes),
    )
    if config.keypoint_on:
        heads = model.roi_heads
        heads.keypoint_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
        heads.keypoint_head = KeypointRCNNHeads(channels, [config.keypoint_head_channels] * config.keypoint_head_convs)
        heads.keypoint_predictor = KeypointRCNNPredictor(config.keypoint_head_channels, config.num_keypoints)
    return model


def synthetic_batches(
    count: int, batch_size: int, size: tuple[int, int], num_keypoints: int, seed: int = 0
) -> list[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        images, targets = [], []
        for _ in range(batch_size):
            image, instances = make_sample(rng, *size, min_shapes=3, max_shapes=6)
            masks = np.stack([inst["mask"] for inst in instances])
            boxes = []
            for mask in masks:
                ys, xs = np.nonzero(mask)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            keypoints = np.stack([inst["keypoints"] for inst in instances])[:, :num_keypoints]
            images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
            targets.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32),
                    "labels": torch.tensor([inst["category_id"] for inst in instances]),
                    "masks": torch.from_numpy(masks.astype(np.uint8)),
                    "keypoints": torch.from_numpy(keypoints).float(),
                }
            )
        batches.append((images, targets))
    return batches


def timed_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, batch, device, amp: bool
) -> float:
    images = [image.to(device) for image in batch[0]]
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        loss = sum(model(images, targets).values())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def bench(
    arch: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    size: tuple[int, int],
    min_size: int | None,
) -> tuple[float, float]:
    changes = {"min_size": min_size} if min_size else {}
    config = config_for(arch, **changes)
    if not config.mask_on:
        raise ValueError(f"{arch}: the benchmark trains the mask head")
    torch.manual_seed(0)
    ours = MaskRCNN(config)
    reference = torchvision_model(config)
    reference.load_state_dict(ours.state_dict(), strict=True)
    memory_format = torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format
    ours = ours.to(device).to(memory_format=memory_format).train()
    reference = reference.to(device).train()
    amp = device.type == "cuda"
    batches = synthetic_batches(warmup + steps, batch_size, size, config.num_keypoints)
    sides = {}
    for name, model in (("ours", ours), ("torchvision", reference)):
        parameters = [p for p in model.parameters() if p.requires_grad]
        sides[name] = (
            model,
            torch.optim.SGD(parameters, lr=1e-3, momentum=0.9),
            torch.amp.GradScaler(device.type, enabled=amp),
        )
    times: dict[str, list[float]] = {"ours": [], "torchvision": []}
    for index, batch in enumerate(batches):
        order = ("ours", "torchvision") if index % 2 == 0 else ("torchvision", "ours")
        for name in order:
            model, optimizer, scaler = sides[name]
            seconds = timed_step(model, optimizer, scaler, batch, device, amp)
            if index >= warmup:
                times[name].append(seconds)
    return tuple(batch_size / statistics.median(times[name]) for name in ("ours", "torchvision"))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="maskrcnn_resnet18_fpn_small,maskrcnn_resnet50_fpn")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--size", default="320x320", help="synthetic image size HxW")
    parser.add_argument("--min-size", type=int, help="training image size (default: the architecture's)")
    parser.add_argument("--device", default="cpu,cuda")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    devices = [torch.device(d) for d in args.device.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'arch':<30}{'device':<8}{'batch':>6}{'ours img/s':>12}{'torchvision':>13}{'speed-up':>10}")
    for arch in args.arch.split(","):
        for device in devices:
            ours, reference = bench(
                arch, device, args.batch_size, args.steps, args.warmup, (height, width), args.min_size
            )
            label = device.type if device.type == "cpu" else torch.cuda.get_device_name(device)
            print(
                f"{arch:<30}{label:<8}{args.batch_size:>6}{ours:>12.2f}{reference:>13.2f}{ours / reference:>9.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
