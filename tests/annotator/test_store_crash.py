"""A process killed with SIGKILL in the middle of editing loses no edit that had returned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from annotator.store import Project

# Adds instances and edits them in a loop; prints each id only after the call has returned.
EDIT_LOOP = """
import sys
import numpy as np
from annotator.store import Project

project = Project.open(sys.argv[1])
image = project.images()[0]
category = project.categories()[0]
mask = np.zeros((image.height, image.width), dtype=bool)
n = 0
while True:
    n += 1
    mask[n % image.height, n % image.width] = True
    instance = project.add_instance(image.id, category.id, mask=mask, keypoints=[n, n, 2])
    project.update_instance(instance.id, keypoints=[n, n + 1, 2])
    print(instance.id, flush=True)
"""


def test_sigkill_during_edits_loses_no_acknowledged_edit(tmp_path: Path) -> None:
    path = tmp_path / "p.annot"
    with Project.create(path, tmp_path) as project:
        project.add_image("a.png", 64, 48, "hash")
        project.add_category("point", keypoints=["p"])
    repo = Path(__file__).resolve().parents[2]
    acknowledged: list[int] = []
    for kill_after in (5, 40, 200):  # kill at different moments, reopening the same file each time
        child = subprocess.Popen(
            [sys.executable, "-c", EDIT_LOOP, str(path)],
            cwd=repo,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        seen = 0
        deadline = time.monotonic() + 60
        while seen < kill_after and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
            seen += 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert seen == kill_after, "the edit loop stopped before it was killed"

    with Project.open(path) as project:
        assert project.integrity_check() == "ok"
        stored = {i.id: i for i in project.instances(1)}
        for instance_id in acknowledged:
            # an id is printed after both its add and its update returned: both must be there
            assert instance_id in stored
            x, y, v = stored[instance_id].keypoints
            assert y == x + 1
