"""The entry point: the annotation window by default, subcommands for headless work.

    python main.py [FOLDER | PROJECT] [--demo]      open the app
    python main.py new PROJECT --images DIR         create a project over a folder of images
    python main.py import PROJECT SOURCE            add a COCO file or a labelme folder
    python main.py export PROJECT OUT.json          write COCO JSON
    python main.py info PROJECT                     review states and instances per category
    python main.py propose PROJECT [--weights W]    the model's proposals into the project
    python main.py train COCO.json --images DIR --out RUN_DIR     fine-tune (or train) the model
    python main.py evaluate COCO.json --images DIR --weights W    COCO box, mask and keypoint AP

Thin on purpose: it parses arguments and calls the packages. Bad input ends in one line on stderr
naming the file and the problem, and exit status 2; nothing already stored is changed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

COMMANDS = ("new", "import", "export", "info", "propose", "train", "evaluate")
EXIT_BAD_INPUT = 2


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


def cmd_import(args: argparse.Namespace) -> int:
    from annotator.importing import import_into

    done = import_into(project_path(args.project), args.source, args.images, args.max_pixels, args.duplicates)
    for warning in done.report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if done.report.duplicates:
        print("warning: --duplicates keep imports the skipped ones anyway", file=sys.stderr)
    print(f"{done.report.summary()} into {done.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from annotator.coco import export_coco
    from model.errors import InputError
    from annotator.store import Project

    with Project.open(project_path(args.project)) as project:
        try:
            counts = export_coco(
                project, args.out, only_done=args.only_done, rle=args.rle, proposals_from=args.proposals
            )
        except OSError as error:
            raise InputError(args.out, f"cannot write the file ({error.strerror or error})") from None
    print(
        f"wrote {counts['images']} images, {counts['annotations']} annotations and "
        f"{counts['categories']} categories to {args.out}"
    )
    if counts["proposals_left_out"]:
        print(
            f"left out {counts['proposals_left_out']} model proposal(s) nobody accepted "
            "(--proposals MIN_SCORE writes those scoring at least MIN_SCORE)",
            file=sys.stderr,
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from annotator.store import Project, Source

    with Project.open(project_path(args.project)) as project:
        print(f"project:     {project.path}")
        print(f"image root:  {project.image_root}")
        print(f"images:      {project.image_count()}")
        for state, count in project.review_state_counts().items():
            print(f"  {state.label:<11}{count}")
        counts = project.instance_counts_by_category()
        proposals = sum(project.instance_counts_by_category(Source.MODEL).values())
        unreviewed = f", {proposals} of them proposals nobody accepted (export leaves those out)" if proposals else ""
        print(f"instances:   {sum(counts.values())}{unreviewed}")
        for category in project.categories():
            keypoints = f"  ({category.num_keypoints} keypoints)" if category.keypoints else ""
            print(f"  {category.id:>3} {category.name:<20}{counts[category.id]}{keypoints}")
    return 0


def default_weights() -> str:
    from model.weights.registry import default_weights

    return default_weights()


def load_predictor(weights: str, device: str, **options):
    """A Predictor, with weights problems turned into one-line errors naming the file or URL."""
    from model.errors import InputError
    from model.predictor import Predictor
    from model.weights.download import WeightsHashError, WeightsUnavailableError

    try:
        return Predictor(weights, device=device, **options)
    except (WeightsUnavailableError, WeightsHashError) as error:
        raise InputError(weights, str(error)) from None
    except FileNotFoundError as error:
        raise InputError(weights, str(error)) from None
    except KeyError as error:
        raise InputError(weights, str(error.args[0])) from None
    except (ValueError, RuntimeError) as error:  # not a weights file, or another architecture
        raise InputError(weights, f"cannot load these weights ({error})") from None


def cmd_propose(args: argparse.Namespace) -> int:
    from annotator.proposals import images_to_propose, propose
    from annotator.store import Project
    from model.images import read_image
    from model.devices import choose_device
    from model.training.comm import Distributed

    # Under torchrun each process takes every WORLD_SIZE-th image on its own GPU; they share the
    # project file (SQLite serialises the short write transactions).
    distributed = Distributed.from_environment()
    device = choose_device(args.device, local_rank=distributed.local_rank if distributed.enabled else None)
    with Project.open(project_path(args.project)) as project:
        images = images_to_propose(project, args.unlabeled_only)[distributed.rank :: distributed.world_size]
        predictor = load_predictor(args.weights or default_weights(), device, score_threshold=args.score_thresh)
        with _progress(len(images), "img") as bar:
            report = propose(
                project,
                predictor,
                images,
                lambda image: read_image(project.image_path(image)),
                on_image=lambda image, count: bar.update(),
            )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    stopped = " (stopped early; everything proposed so far is saved)" if report.stopped else ""
    print(
        f"proposed {report.instances} instances on {report.images} images with "
        f"{predictor.model_version} on {predictor.device}{stopped}"
    )
    return 130 if report.stopped else 0


def cmd_train(args: argparse.Namespace) -> int:
    from model.training.comm import RunStopped
    from model.training.options import TrainOptions
    from model.training.run import run_training

    options = TrainOptions(batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                           val_fraction=args.val_fraction, seed=args.seed, num_workers=args.workers,
                           checkpoint_period=args.checkpoint_period, eval_period=args.eval_period,
                           clip_grad_norm=args.clip_grad, amp=args.amp, trainable_backbone_layers=args.trainable_layers,
                           log_period=args.log_period)  # fmt: skip
    try:
        run_training(args.coco, args.images, Path(args.out), options, weights=args.weights or default_weights(),
                     architecture=args.arch, iterations=args.iters, epochs=args.epochs, min_size=args.min_size,
                     max_size=args.max_size, resume=args.resume, device=args.device)  # fmt: skip
    except RunStopped as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from model.data import load_coco
    from model.evaluation import evaluate, format_summary

    data = load_coco(args.coco, args.images)  # InputError names the COCO file, or an image
    for warning in data.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    predictor = load_predictor(args.weights or default_weights(), args.device, feature_cache_size=0)
    with _progress(len(data.images), "img") as bar:
        summary = evaluate(predictor, data, on_image=lambda count: bar.update())
    print(f"{predictor.model_version} on {len(data.images)} images of {args.coco}")
    print(format_summary(summary))
    if args.json:
        print(json.dumps({"weights": predictor.model_version, "images": len(data.images), **summary}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from model.images import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Mask R-CNN annotation assistant. With no command, opens the app "
        "(on a folder of images, a project file, or --demo).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def max_pixels(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--max-pixels",
            type=int,
            default=DEFAULT_MAX_PIXELS,
            metavar="N",
            help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS:,})",
        )

    new = command("new", cmd_new, "create a project over a folder of images")
    new.add_argument("project", metavar="PROJECT", help="project file to create (.annot is added if no suffix)")
    new.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    max_pixels(new)

    imp = command("import", cmd_import, "import a COCO JSON file or a folder of labelme JSON files")
    imp.add_argument("project", metavar="PROJECT", help="project file; created if it does not exist")
    imp.add_argument("source", metavar="SOURCE", help="COCO JSON file, or folder of labelme files")
    imp.add_argument(
        "--images",
        metavar="DIR",
        help="image root that COCO file_name / labelme imagePath refer to (default: the "
        "COCO file's folder or the labelme folder)",
    )
    imp.add_argument(
        "--duplicates",
        choices=("skip", "keep"),
        default="skip",
        help="an instance the image holds already (same category and mask): skip it (default), or keep both",
    )
    max_pixels(imp)

    exp = command("export", cmd_export, "export the project as COCO JSON")
    exp.add_argument("project", metavar="PROJECT")
    exp.add_argument("out", metavar="OUT.json")
    exp.add_argument("--only-done", action="store_true", help="only images marked done")
    exp.add_argument(
        "--rle", action="store_true", help="masks as compressed RLE (pixel-exact, keeps holes) instead of polygons"
    )
    exp.add_argument(
        "--proposals",
        type=float,
        metavar="MIN_SCORE",
        help="also write the model proposals nobody accepted that score at least MIN_SCORE, "
        "each with its score (default: only the labels people kept)",
    )

    info = command("info", cmd_info, "images per review state and instances per category")
    info.add_argument("project", metavar="PROJECT")

    pro = command(
        "propose",
        cmd_propose,
        "run the model over the project's images and store its proposals (images marked done are left alone)",
    )
    pro.add_argument("project", metavar="PROJECT")
    pro.add_argument(
        "--weights",
        metavar="NAME|PATH",
        help="registry name (e.g. maskrcnn_resnet50_fpn.COCO_V1), or a .pth / .safetensors "
        "file (default: the bundled demo model)",
    )
    pro.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        metavar="S",
        help="keep proposals scoring at least this (default 0.5)",
    )
    pro.add_argument("--unlabeled-only", action="store_true", help="only images not labelled yet")
    pro.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")

    def sizes_list(text: str) -> list[int]:
        try:
            sizes = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sizes like 640 or 640,672,704, got {text!r}") from None
        if not all(size > 0 for size in sizes):
            raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
        return sizes

    def coco_data(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("coco", metavar="COCO.json", help="COCO instances or keypoints file (e.g. from 'export')")
        sub.add_argument(
            "--images", required=True, metavar="DIR", help="folder that the file's file_name entries are in"
        )

    tra = command(
        "train",
        cmd_train,
        "train or fine-tune the model on a COCO file; progress as JSON lines on stdout "
        "(several GPUs: torchrun --nproc-per-node N main.py train ...)",
    )
    coco_data(tra)
    tra.add_argument(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="folder for checkpoints and the final weights (model_final.safetensors)",
    )
    tra.add_argument(
        "--weights",
        metavar="NAME|PATH|none",
        help="start from registry weights (a COCO model, or an ImageNet backbone such as "
        "resnet50.IMAGENET1K_V1 for --arch), a .pth / .safetensors file, or 'none' (random init "
        "of --arch); classes and keypoints are matched by name (default: the bundled demo model)",
    )
    tra.add_argument(
        "--arch", metavar="NAME", help="architecture for --weights none (default maskrcnn_resnet18_fpn_small)"
    )
    length = tra.add_mutually_exclusive_group()
    length.add_argument(
        "--epochs", type=float, default=12, metavar="N", help="passes over the training images (default 12)"
    )
    length.add_argument("--iters", type=int, metavar="N", help="optimizer steps (instead of --epochs)")
    tra.add_argument("--batch-size", type=int, default=2, metavar="B", help="images per step and process (default 2)")
    tra.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        help="base learning rate (default: 0.02 x total batch / 16 for SGD, 1e-4 x batch / 16 for AdamW)",
    )
    tra.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="default sgd (momentum 0.9)")
    tra.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="fraction of the images held out to report AP before and after (default 0.1; 0: none)",
    )
    tra.add_argument(
        "--trainable-layers",
        type=int,
        choices=range(6),
        metavar="N",
        help="ResNet stages trained, counted from the top (0-5; default: the architecture's, 5 for --weights none)",
    )
    tra.add_argument(
        "--min-size",
        type=sizes_list,
        metavar="N[,N...]",
        help="shorter image side in training, one drawn per image (inference uses the last; "
        "default: the architecture's)",
    )
    tra.add_argument("--max-size", type=int, metavar="N", help="longest image side (default: the architecture's)")
    tra.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm to this")
    tra.add_argument(
        "--checkpoint-period", type=int, default=500, metavar="N", help="checkpoint every N steps (default 500)"
    )
    tra.add_argument("--eval-period", type=int, default=0, metavar="N", help="also evaluate every N steps")
    tra.add_argument("--seed", type=int, default=0, help="seed of the split, the data order and the initialisation")
    tra.add_argument(
        "--log-period", type=int, default=20, metavar="N", help="a progress event every N steps (default 20)"
    )
    tra.add_argument("--workers", type=int, default=1, metavar="N", help="data-loading processes (default 1)")
    amp = tra.add_mutually_exclusive_group()
    amp.add_argument(
        "--amp",
        action="store_true",
        default=None,
        help="mixed precision: float16 on CUDA (the default there), bfloat16 on the CPU (faster on "
        "CPUs with native bfloat16, e.g. AVX512-BF16 or AMX)",
    )
    amp.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision")
    tra.add_argument(
        "--device", default="auto", help="auto (CUDA, else CPU; under torchrun each rank its GPU), cpu, cuda, cuda:1"
    )
    tra.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from its last checkpoint, with that run's settings",
    )

    eva = command("evaluate", cmd_evaluate, "COCO box, mask and keypoint AP of a model on a COCO file")
    coco_data(eva)
    eva.add_argument(
        "--weights",
        metavar="NAME|PATH",
        help="registry name or weights file, e.g. RUN_DIR/model_final.safetensors (default: the bundled demo model)",
    )
    eva.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    eva.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    return parser


def build_gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Open the annotation app. Commands: " + ", ".join(COMMANDS) + " (see 'main.py COMMAND --help').",
    )
    parser.add_argument(
        "path",
        nargs="?",
        metavar="FOLDER|PROJECT",
        help="a folder of images (creates a project there) or a project file",
    )
    parser.add_argument("--demo", action="store_true", help="open the bundled demo project")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from model.errors import InputError

    try:
        if argv and argv[0] in COMMANDS:
            args = build_parser().parse_args(argv)
            return args.handler(args)
        if argv and argv[0] in ("-h", "--help"):
            build_parser().print_help()
            return 0
        args = build_gui_parser().parse_args(argv)
        from annotator.gui.app import run_app

        return run_app(Path(args.path) if args.path else None, demo=args.demo)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
