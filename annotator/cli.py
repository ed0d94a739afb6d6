"""The command lines of the project's jobs (``main.py new``, ``add``, ``import``, ``export``, ``info``,
``propose``): each calls the use case's home in ``annotator`` (the one the app calls too) and
prints for a person. ``main.py`` declares their arguments. Bad input raises ``InputError``.

Importing this module imports no torch and no Qt, so that ``main.py info`` starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def project_path(argument: str) -> Path:
    """``PROJECT`` as typed, with the project suffix added when the user left it out."""
    from annotator.store import PROJECT_SUFFIX

    path = Path(argument)
    return path if path.suffix else path.with_name(path.name + PROJECT_SUFFIX)


def _progress(total: int, what: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=what, file=sys.stderr, disable=None, dynamic_ncols=True)


def _advance(bar, done: int, total: int) -> None:
    bar.total = total
    bar.update(done - bar.n)


def cmd_new(args: argparse.Namespace) -> int:
    from annotator.image_folder import check_new_project, create_project, scan_images

    path = project_path(args.project)
    check_new_project(path)
    with _progress(0, "img") as bar:
        scan = scan_images(Path(args.images), args.max_pixels, progress=lambda done, total: _advance(bar, done, total))
    if scan.unreadable:  # the command line refuses what the app would leave out with a warning
        raise scan.unreadable[0]
    with create_project(path, scan):
        pass
    print(f"created {path} with {len(scan.images)} images from {scan.folder}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from annotator.image_folder import add_images
    from annotator.store import Project
    from annotator.wording import counted

    with Project.open(project_path(args.project)) as project:
        report = add_images(project, [Path(p) for p in args.paths], args.max_pixels)
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    known = f" ({report.known} the project had already)" if report.known else ""
    print(f"added {counted(report.added, 'image')} to {project.path}{known}")
    return 0 if report.added or report.known or not report.problems else 1


def cmd_import(args: argparse.Namespace) -> int:
    from annotator.importing import import_into

    done = import_into(project_path(args.project), args.source, args.images, args.max_pixels, args.duplicates)
    for warning in done.report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if done.report.duplicates:
        print("warning: --duplicates keep imports the skipped ones anyway", file=sys.stderr)
    print(f"{done.report.summary()} into {done.path}")
    return 0


# damaged instances an export names one by one; 'main.py check' lists them all
DAMAGED_SHOWN = 10


def cmd_export(args: argparse.Namespace) -> int:
    from annotator.coco import export_coco
    from annotator.labelme_export import export_labelme
    from annotator.store import Project
    from annotator.yolo_export import export_yolo
    from model.errors import InputError

    if args.rle and args.format != "coco":
        raise InputError(args.out, f"--rle is for COCO files; a {args.format} export writes polygons")
    folder_exports = {"labelme": export_labelme, "yolo": export_yolo}
    damaged: list = []  # instances whose stored values are damaged: left out, named below
    with Project.open(project_path(args.project)) as project:
        try:
            if args.format == "coco":
                counts = export_coco(
                    project,
                    args.out,
                    only_done=args.only_done,
                    rle=args.rle,
                    proposals_from=args.proposals,
                    damaged=damaged,
                )
            else:
                report = folder_exports[args.format](project, args.out, args.only_done, args.proposals)
        except OSError as error:
            where = args.out if args.format == "coco" else error.filename or args.out  # a folder export: the file
            raise InputError(where, f"cannot write ({error.strerror or error})") from None
    if args.format == "coco":
        print(
            f"wrote {counts['images']} images, {counts['annotations']} annotations and "
            f"{counts['categories']} categories to {args.out}"
        )
        left_out = counts["proposals_left_out"]
    else:
        print(report.summary())
        for line in report.lines():
            print(line, file=sys.stderr)
        left_out = report.proposals_left_out
    for row in damaged[:DAMAGED_SHOWN]:
        print(f"warning: {project.path}: left out damaged {row}", file=sys.stderr)
    if len(damaged) > DAMAGED_SHOWN:
        print(f"warning: and {len(damaged) - DAMAGED_SHOWN} more damaged instances left out", file=sys.stderr)
    if left_out:
        print(
            f"left out {left_out} model proposal(s) nobody accepted "
            "(--proposals MIN_SCORE writes those scoring at least MIN_SCORE)",
            file=sys.stderr,
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from annotator.effort import effort_report
    from annotator.project_info import describe
    from annotator.store import Project

    with Project.open(project_path(args.project)) as project:
        print("\n".join(describe(project)))
        if args.effort:
            print("\n".join(effort_report(project)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``main.py check``: the problems, one a line naming the file, and a summary; status 1 when
    the file is damaged."""
    from annotator.project_check import check_project
    from annotator.store import Project

    with Project.open(project_path(args.project), tidy=False) as project:
        report = check_project(project)
    for line in report.lines():
        print(f"{project.path}: {line}", file=sys.stdout if report.sound else sys.stderr)
    return 0 if report.sound else 1


def cmd_propose(args: argparse.Namespace) -> int:
    from annotator.proposals import images_to_propose, propose
    from annotator.store import Project
    from model.cli import load_predictor
    from model.devices import choose_device
    from model.images import read_image
    from model.training.comm import Distributed

    distributed = Distributed.from_environment()  # under torchrun: this process's share of the images
    device = choose_device(args.device, local_rank=distributed.local_rank if distributed.enabled else None)
    if distributed.enabled:
        return _propose_on_ranks(args, distributed, device)
    with Project.open(project_path(args.project)) as project:
        images = images_to_propose(project, args.unlabeled_only)
        predictor = load_predictor(args.weights, device, precision=args.precision, score_threshold=args.score_thresh)
        with _progress(len(images), "img") as bar:
            report = propose(
                project,
                predictor,
                images,
                lambda image: read_image(project.image_path(image)),
                on_image=lambda image, count: bar.update(),
            )
    return _print_proposals(report, predictor)


def _propose_on_ranks(args: argparse.Namespace, distributed, device) -> int:
    """``propose`` under torchrun (``annotator.distributed_propose``): only rank 0 opens the
    project and prints what the run did; the other ranks print only their errors."""
    from annotator.distributed_propose import propose_on_ranks
    from model.cli import load_predictor
    from model.training.comm import RunStopped

    distributed.init(device, backend="gloo")  # the ranks send each other Python objects, no tensors
    bar = _progress(0, "img") if distributed.is_main else None
    try:
        ran = propose_on_ranks(
            distributed,
            project_path(args.project),
            args.unlabeled_only,
            lambda: load_predictor(args.weights, device, precision=args.precision, score_threshold=args.score_thresh),
            progress=None if bar is None else lambda done, total: _advance(bar, done, total),
        )
    except RunStopped as error:  # a rank other than 0: the rank that ended says why
        print(f"error: {error}", file=sys.stderr, flush=True)
        # with a peer gone the process group cannot be taken down: gloo's threads end the process
        # with "terminate called without an active exception" (SIGABRT) at its teardown or at exit,
        # about one run in ten; this rank has nothing to save, so it leaves at once
        sys.stdout.flush()
        os._exit(1)
    finally:
        if bar is not None:
            bar.close()
        distributed.close()
    if ran is None:
        # A rank other than 0 has nothing left to save. At the interpreter's teardown gloo's threads
        # can still end it with SIGABRT ("terminate called without an active exception": once in
        # about twenty CI runs), which torchrun reports as a failed run; so it leaves without one.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return _print_proposals(*ran)


def _print_proposals(report, predictor) -> int:
    """What ``propose`` did, for a person; the exit status."""
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.precision_note and not predictor.mixed_precision:  # why float32 runs where bf16 could
        print(report.precision_note, file=sys.stderr)
    if report.stopped_by is not None:
        print(f"error: {report.stopped_by}", file=sys.stderr)
    stopped = " (stopped early; everything proposed so far is saved)" if report.stopped else ""
    print(
        f"proposed {report.instances} instances on {report.images} images with "
        f"{predictor.model_version} on {getattr(predictor, 'execution', predictor.device)}{stopped}"
    )
    return 1 if report.stopped_by is not None else 130 if report.stopped else 0
