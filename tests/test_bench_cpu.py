"""bench/cpu.py's quick mode on the small architecture: the stage table has every stage of the
model for every variant, and the stages that compute count FLOPs and get a finite efficiency.
Times are not checked (any machine, any load)."""

from __future__ import annotations

import math

from bench import cpu


def test_quick_mode_prints_every_stage_with_a_finite_efficiency(capsys) -> None:
    results = cpu.main(["--quick", "--arch", "maskrcnn_resnet18_fpn_small", "--size", "320x240"])
    printed = capsys.readouterr().out

    # the small model has masks and keypoints: every stage runs, and torchvision has no builder for it
    assert results.stages == list(cpu.STAGES)
    assert "ours fp32" in results.ms
    assert all(set(results.ms[name]) == {*cpu.STAGES, cpu.TOTAL} for name in results.ms)
    for stage in [*cpu.STAGES, cpu.TOTAL]:
        assert stage in printed
    for stage in (cpu.BACKBONE, "RPN head + anchors", "mask head (RoIAlign, convs)", cpu.TOTAL):
        assert results.gflop[stage] > 0
        for name in results.ms:
            efficiency = results.efficiency(name, stage)
            assert efficiency is not None and math.isfinite(efficiency) and efficiency > 0
    assert all(math.isfinite(peak) and peak > 0 for peak in results.peaks.values())
    assert "matmul peak" in printed and "first box-to-mask after an image opens" in printed
    assert set(results.box_to_mask) >= {"ours fp32"}
    assert all(count > 0 for count in results.detections.values())
    assert "top operators after the backbone" in printed
