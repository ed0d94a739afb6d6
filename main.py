"""The entry point: the annotation window by default, subcommands for headless work.

    python main.py [FOLDER | PROJECT] [--demo]      open the app
    python main.py new PROJECT --images DIR         create a project over a folder of images
    python main.py add PROJECT FILES_OR_FOLDERS     add images put in the image folder since
    python main.py import PROJECT SOURCE            add a COCO file or a labelme folder
    python main.py export PROJECT OUT [--format F]  write COCO JSON, labelme JSON files or a YOLO dataset
    python main.py info PROJECT [--effort]          review states, instances per category, effort
    python main.py check PROJECT                    SQLite's integrity check and every stored value read
    python main.py propose PROJECT [--weights W]    the model's proposals into the project
    python main.py train COCO.json --images DIR --out RUN_DIR     fine-tune (or train) the model
    python main.py evaluate COCO.json --images DIR --weights W    COCO box, mask and keypoint AP

Thin on purpose: it declares the arguments and calls the packages; each command's handler lives
beside the use case it calls (``annotator.cli`` for the project's commands, ``model.cli`` for
training and evaluation). Bad input ends in one line on stderr naming the file and the problem,
and exit status 2; nothing already stored is changed.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

COMMANDS = ("new", "add", "import", "export", "info", "check", "propose", "train", "evaluate")
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    from annotator import cli as project_cli
    from model import cli as model_cli
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

    new = command("new", project_cli.cmd_new, "create a project over a folder of images")
    new.add_argument("project", metavar="PROJECT", help="project file to create (.annot is added if no suffix)")
    new.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    max_pixels(new)

    imp = command("import", project_cli.cmd_import, "import a COCO JSON file or a folder of labelme JSON files")
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

    add = command("add", project_cli.cmd_add, "add image files, or the images under folders, to a project")
    add.add_argument("project", metavar="PROJECT")
    add.add_argument("paths", metavar="FILE_OR_FOLDER", nargs="+", help="under the project's image folder")
    max_pixels(add)

    exp = command(
        "export",
        project_cli.cmd_export,
        "export the project as COCO JSON, labelme JSON files or an Ultralytics YOLO segmentation dataset",
    )
    exp.add_argument("project", metavar="PROJECT")
    exp.add_argument(
        "out", metavar="OUT", help="coco: the .json file to write; labelme, yolo: the folder to write into"
    )
    exp.add_argument(
        "--format",
        choices=("coco", "labelme", "yolo"),
        default="coco",
        help="coco (default); labelme: a JSON file per image; yolo: label files, train.txt and data.yaml",
    )
    exp.add_argument("--only-done", action="store_true", help="only images marked done")
    exp.add_argument(
        "--rle",
        action="store_true",
        help="coco only: masks as compressed RLE (pixel-exact, keeps holes) instead of polygons",
    )
    exp.add_argument(
        "--proposals",
        type=float,
        metavar="MIN_SCORE",
        help="also write the model proposals nobody accepted that score at least MIN_SCORE, "
        "each with its score (default: only the labels people kept)",
    )

    info = command("info", project_cli.cmd_info, "images per review state and instances per category")
    info.add_argument("project", metavar="PROJECT")
    info.add_argument("--effort", action="store_true", help="also what labelling cost: per model version and over time")

    check_help = "check a project file for damage: SQLite's integrity check, then every stored value read"
    command("check", project_cli.cmd_check, check_help).add_argument("project", metavar="PROJECT")

    pro = command(
        "propose",
        project_cli.cmd_propose,
        "run the model over the project's images and store its proposals (images marked done are left alone)",
    )
    pro.add_argument("project", metavar="PROJECT")
    model_cli.add_model_arguments(
        pro, "registry name (e.g. maskrcnn_resnet50_fpn.COCO_V1), or a .pth / .safetensors file"
    )
    pro.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        metavar="S",
        help="keep proposals scoring at least this (default 0.5)",
    )
    pro.add_argument("--unlabeled-only", action="store_true", help="only images not labelled yet")

    train_help = "train or fine-tune the model on a COCO file; progress as JSON lines on stdout (several GPUs: "
    model_cli.add_train_arguments(
        command("train", model_cli.cmd_train, train_help + "torchrun --nproc-per-node N main.py train ...)")
    )
    evaluate_help = "COCO box, mask and keypoint AP of a model on a COCO file"
    model_cli.add_evaluate_arguments(command("evaluate", model_cli.cmd_evaluate, evaluate_help))
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
    from annotator.project_file import DamagedRow, database_error
    from model.errors import InputError

    args = None
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
    except (sqlite3.Error, DamagedRow) as error:  # a project file locked, read-only or damaged past what opening saw
        print(f"error: {database_error(getattr(args, 'project', None) or 'the project file', error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
