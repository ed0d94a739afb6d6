"""bench/precision.py on the trained demo model: every image is compared and the demo model, which
bfloat16 serves as well as float32, gets the bf16 verdict."""

from __future__ import annotations

from bench import precision


def test_the_demo_model_agrees_in_bf16_on_every_image_compared(capsys) -> None:
    report = precision.main(["--limit", "2"])
    printed = capsys.readouterr().out
    assert len(report.counts) == 2 and all(exact == fast and exact > 0 for _, exact, fast in report.counts)
    assert report.passes and report.agreement.median_mask_iou >= 0.99
    assert "auto would run: bf16" in printed and report.weights in printed
