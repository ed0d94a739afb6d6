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


def test_the_ap_both_ways_is_printed_against_its_tolerance_when_the_labels_are_given(tmp_path, capsys) -> None:
    import json

    from resources import DEMO_DIR

    # two of the demo's labelled images, so that the test stays short
    ground_truth = json.loads((DEMO_DIR / "annotations.json").read_text())
    kept = [entry["id"] for entry in ground_truth["images"][:2]]
    ground_truth["images"] = [entry for entry in ground_truth["images"] if entry["id"] in kept]
    ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["image_id"] in kept]
    annotations = tmp_path / "two.json"
    annotations.write_text(json.dumps(ground_truth))
    precision.main(["--limit", "1", "--annotations", str(annotations)])
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.startswith(("segm", "bbox"))}
    assert set(rows) == {"segm", "bbox"} and all(0.5 < float(exact) <= 1 for exact, _, _ in rows.values())
    assert abs(float(rows["segm"][2])) <= precision.AP_TOLERANCE
    assert f"mask AP within {precision.AP_TOLERANCE} of fp32's" in printed
