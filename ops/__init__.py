"""Tensor operators with their own kernels: RoIAlign on one map and over all FPN levels.

``ops`` imports nothing else of the project. Importing it registers the ``maskrcnn_ops`` custom
operators with PyTorch; CUDA kernels are compiled with NVRTC on first use and serve a GPU once they
agree with the PyTorch path there (``ops/_selfcheck.py``).
"""

from ops.roi_align import multilevel_roi_align, roi_align

__all__ = ["roi_align", "multilevel_roi_align"]
