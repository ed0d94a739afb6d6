"""The project store at scale: builds a project of 100,000 images and 1,000,000 instances and
prints how long opening, fetching, editing and exporting take, next to the targets.

    python bench/store.py                       # full size (building it takes a few minutes)
    python bench/store.py --images 10000        # smaller, for a quick look

Instances are a realistic mix: half drawn as polygons (imported or hand-drawn: the outline is kept
and exported as it is), half model masks (exported, with --proposals 0, as polygons traced from the mask, or as RLE).
Each export runs in a child process, so its peak memory is its own. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotator import masks  # noqa: E402
from annotator.store import Project, ReviewState, Source  # noqa: E402

WIDTH, HEIGHT = 640, 480
TARGETS = {"open": 1.0, "fetch": 0.005, "edit": 0.005, "export": 60.0}


def shape_pool(count: int, seed: int = 0) -> list[tuple[list[list[float]], masks.RLE]]:
    """Distinct objects of many sizes: each as an outline polygon and as its mask's RLE."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(count):
        centre = rng.uniform((40, 40), (WIDTH - 40, HEIGHT - 40))
        radii = rng.uniform(8, 90, size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(6, 40))))
        wobble = rng.uniform(0.7, 1.0, size=angles.size)
        points = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii * wobble[:, None]
        points = np.clip(points, 0, (WIDTH - 1, HEIGHT - 1))
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
        pool.append(([np.round(points, 1).reshape(-1).tolist()], masks.encode(mask)))
    return pool


def build(path: Path, num_images: int, per_image: int) -> float:
    start = time.perf_counter()
    pool = shape_pool(2000)
    with Project.create(path, path.parent / "images") as project:
        person = project.add_category("person", keypoints=["nose", "left_eye", "right_eye"], skeleton=[(1, 2), (1, 3)])
        thing = project.add_category("thing")
        chunk = 1000
        for first in range(0, num_images, chunk):
            with project.transaction():  # one commit a chunk, as an import does
                for index in range(first, min(first + chunk, num_images)):
                    image = project.add_image(
                        f"img/{index:06d}.jpg", WIDTH, HEIGHT, f"{index:064x}", state=ReviewState(index % 4)
                    )
                    for k in range(per_image):
                        polygons, rle = pool[(index * per_image + k) % len(pool)]
                        if k % 2:
                            project.add_instance(
                                image.id, thing.id, rle=rle, score=0.9, source=Source.MODEL, model_version="bench"
                            )
                        else:
                            box = masks.bbox(rle)
                            project.add_instance(
                                image.id,
                                person.id,
                                polygons=polygons,
                                keypoints=[box[0] + 1, box[1] + 1, 2, 0, 0, 0, box[0] + 2, box[1] + 3, 1],
                            )
            print(
                f"\r  built {min(first + chunk, num_images):,} / {num_images:,} images",
                end="",
                file=sys.stderr,
                flush=True,
            )
    print(file=sys.stderr)
    return time.perf_counter() - start


def measure(path: Path, num_images: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    start = time.perf_counter()
    project = Project.open(path)
    images = project.images()  # what the app's image list needs
    project.review_state_counts()
    figures["open"] = time.perf_counter() - start
    assert len(images) == num_images

    rng = np.random.default_rng(1)
    fetches = []
    for image_id in rng.integers(1, num_images + 1, size=300):
        start = time.perf_counter()
        project.instances(int(image_id))
        fetches.append(time.perf_counter() - start)
    figures["fetch"] = statistics.median(fetches)
    figures["fetch_p99"] = float(np.percentile(fetches, 99))

    edits = []
    for image_id in rng.integers(1, num_images + 1, size=200):
        instance = project.instances(int(image_id))[0]
        x, y = instance.bbox[0] + 3, instance.bbox[1] + 4
        start = time.perf_counter()
        project.update_instance(instance.id, keypoints=[x, y, 2, 0, 0, 0, 0, 0, 0])
        edits.append(time.perf_counter() - start)
    figures["edit"] = statistics.median(edits)
    figures["edit_p99"] = float(np.percentile(edits, 99))
    project.close()
    return figures


# Runs the CLI's export and reports the process's own peak resident memory (KiB on Linux).
EXPORT_CHILD = """
import resource, sys
sys.path.insert(0, sys.argv[1])
import main
code = main.main(["export", *sys.argv[2:]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def export(path: Path, out: Path, *flags: str) -> tuple[float, float]:
    """(seconds, peak resident MiB) of ``main.py export`` in a child process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_CHILD, str(REPO), str(path), str(out), *flags],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    return seconds, int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--instances-per-image", type=int, default=10)
    parser.add_argument("--dir", type=Path, help="where to build (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="store-bench-"))
    path = folder / "bench.annot"
    total = args.images * args.instances_per_image
    if not path.exists():
        print(f"building {args.images:,} images, {total:,} instances in {path} ...", file=sys.stderr)
        print(f"build: {build(path, args.images, args.instances_per_image):.0f} s", file=sys.stderr)
    figures = measure(path, args.images)
    # --proposals 0: the model masks go out too, so every instance is written (the worst case)
    figures["export"], polygon_peak = export(path, folder / "out.json", "--proposals", "0")
    figures["export_rle"], rle_peak = export(path, folder / "out_rle.json", "--rle", "--proposals", "0")

    size = path.stat().st_size / 2**20
    print(
        f"\nproject store: {args.images:,} images, {total:,} instances, file {size:,.0f} MiB "
        f"({Path(__file__).name}, 2-core machine)"
    )
    print(f"{'measure':<42}{'ours':>12}{'target':>12}")
    rows = [
        ("open (open + list images + state counts)", f"{figures['open']:.3f} s", f"<= {TARGETS['open']} s"),
        ("fetch one image's instances (median)", f"{figures['fetch'] * 1e3:.2f} ms", "<= 5 ms"),
        ("fetch one image's instances (p99)", f"{figures['fetch_p99'] * 1e3:.2f} ms", ""),
        ("commit one edit (median)", f"{figures['edit'] * 1e3:.2f} ms", "<= 5 ms"),
        ("commit one edit (p99)", f"{figures['edit_p99'] * 1e3:.2f} ms", ""),
        ("export COCO, polygons (default)", f"{figures['export']:.1f} s", f"<= {TARGETS['export']:.0f} s"),
        ("  peak memory of the export process", f"{polygon_peak:.0f} MiB", "bounded"),
        ("export COCO, --rle", f"{figures['export_rle']:.1f} s", f"<= {TARGETS['export']:.0f} s"),
        ("  peak memory of the export process", f"{rle_peak:.0f} MiB", "bounded"),
    ]
    for name, ours, target in rows:
        print(f"{name:<42}{ours:>12}{target:>12}")


if __name__ == "__main__":
    main()
