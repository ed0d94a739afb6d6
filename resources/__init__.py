"""Data that ships with the program: category lists, icons, the demo project and its model."""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
DEMO_DIR = RESOURCES / "demo"
DEMO_MODEL = DEMO_DIR / "model.safetensors"


def bundled_model() -> Path | None:
    """The demo model when this installation has it (a source checkout without the binary has not)."""
    return DEMO_MODEL if DEMO_MODEL.is_file() else None
