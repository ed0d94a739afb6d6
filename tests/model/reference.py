"""torchvision's detection models as the reference our model is compared against, by the parity
tests and by the benchmarks.

Published weights cannot be downloaded on the build machines, so the reference gets random
weights from a fixed seed, with BatchNorm statistics randomised (so that they matter) and the
classifier / mask logits scaled so that scores and masks are spread as a trained model's are
rather than saturated (ties would make the ranking of detections arbitrary on both sides, and
saturated scores give no realistic number of detections).
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.models.detection as tv_detection

from model.synthetic import make_sample


def synthetic_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    """Overlapping shapes on textured backgrounds, (3, H, W) float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = [make_sample(rng, h, w, min_shapes=3, max_shapes=6)[0] for h, w in sizes]
    return [torch.from_numpy(im).permute(2, 0, 1).double() / 255 for im in images]


def torchvision_reference(
    name: str, calibration: list[torch.Tensor] | None = None, *, random_batchnorm: bool = True, **kwargs: object
) -> torch.nn.Module:
    """torchvision's ``name`` model in eval mode with calibrated random weights.

    Args:
        name: a builder of ``torchvision.models.detection``.
        calibration: (3, H, W) images in [0, 1] whose RoI features set the scale of the logit
            layers; by default one 160 x 200 synthetic image.
        random_batchnorm: randomise the frozen BatchNorm statistics, so that a parity test sees
            them used; off, they are the identity, and full-size images give a trained model's
            spread of scores rather than a few detections or many near-ties (the benchmarks).
        kwargs: the builder's keyword arguments (``min_size``, ``box_detections_per_img``, ...).
    """
    torch.manual_seed(0)
    reference = getattr(tv_detection, name)(weights=None, weights_backbone=None, **kwargs).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in reference.modules() if random_batchnorm else []:
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.1 * torch.randn(c, generator=generator))

    heads = reference.roi_heads
    inputs: dict[str, torch.Tensor] = {}
    hooks = [heads.box_predictor.register_forward_pre_hook(lambda m, a: inputs.__setitem__("box", a[0]))]
    if heads.has_mask():
        hooks.append(
            heads.mask_predictor.mask_fcn_logits.register_forward_pre_hook(
                lambda m, a: inputs.__setitem__("mask", a[0])
            )
        )
    if calibration is None:
        calibration = synthetic_images([(160, 200)], seed=5)
    with torch.inference_mode():
        reference([image.float() for image in calibration])
    for hook in hooks:
        hook.remove()

    def rescale(layer: torch.nn.Module, features: torch.Tensor, std: float) -> None:
        rms = float(features.float().pow(2).mean().sqrt())
        with torch.no_grad():
            layer.weight.normal_(0, std / (rms * features.shape[1] ** 0.5), generator=generator)
            layer.bias.zero_()

    rescale(heads.box_predictor.cls_score, inputs["box"], 2.0)
    rescale(heads.box_predictor.bbox_pred, inputs["box"], 1.0)
    if "mask" in inputs:
        rescale(heads.mask_predictor.mask_fcn_logits, inputs["mask"], 3.0)
    return reference
