"""Weights: one module for each job.

- ``registry``: the published files (names, URLs, hashes, label spaces, metrics), like
  torchvision's weights enums; ``WeightsInfo.config()`` is the config a file was trained with.
- ``download``: a registry file into torch.hub's cache, hash-checked, atomically; local files.
- ``formats``: reading and writing ``.pth`` (``weights_only=True``: a file never runs code) and
  ``.safetensors``.
- ``legacy``: torchvision's older key names renamed to the current ones.
- ``architecture``: the config a bare torchvision-layout state dict was saved from.
- ``transfer``: loading into a model whose classes, keypoints or heads differ.
- ``resolve``: the one resolver (name or path -> verified file, state dict, config) that
  ``load_model``, ``build_model`` and training share.

This file imports nothing: ``model.detector`` imports ``model.weights.legacy``, which runs this
file first, and ``formats``, ``transfer`` and ``resolve`` import ``model.detector``, so
re-exporting them here would be an import cycle. Import from the module that does the job.
"""
