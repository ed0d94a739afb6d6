"""Data that ships with the program: category lists, icons, the demo project and its model."""

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
DEMO_DIR = RESOURCES / "demo"
DEMO_MODEL = DEMO_DIR / "model.safetensors"
