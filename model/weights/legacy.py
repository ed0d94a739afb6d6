"""torchvision's older key names, renamed to the current ones.

Older torchvision files name some layers differently; torchvision renames them in load hooks
keyed on the modules' version metadata, which is easily lost (re-saving, safetensors). We rename
by pattern, whatever the metadata says. ``MaskRCNN`` applies this in a load-state-dict pre-hook,
so this module imports nothing of the network.
"""

from __future__ import annotations

import re

from torch import Tensor

_LEGACY_KEYS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$"), r"backbone.fpn.\1.\2.0.\3"),
]
_LEGACY_MASK_FCN = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")


def upgrade_legacy_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision's legacy keys (``rpn.head.conv.weight``, ``backbone.fpn.inner_blocks.0.weight``,
    ``roi_heads.mask_head.mask_fcn1.weight``) to the current ones; other keys pass unchanged."""
    upgraded: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in _LEGACY_KEYS:
            new_key = pattern.sub(replacement, new_key)
        match = _LEGACY_MASK_FCN.match(new_key)
        if match:
            new_key = f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
        upgraded[new_key] = value
    return upgraded
