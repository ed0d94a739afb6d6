"""``bench/effort.py --rounds K --round-size N [--order list|uncertainty]``: the loop measured. The
simulated person labels N images with the current model's proposals, the images are marked done in
a project, the model is fine-tuned on all images done so far through the app's own round
(``annotator.learning.learning_round``: the same ``main.py train`` child process, the same held-out
comparison), the next N images are labelled with the model the round left in use, and so on.

The project holds the ground truth as the labels the person ends with (an image is exported for
training only once marked done): the simulated person reached IoU >= ``--iou`` on every instance,
and the ground truth stands for what it drew. Round ``k``'s ``train_seconds`` is the training that
made the model it labelled with (0 for round 0, which labels with the model given).

Each round labels other images, so round-to-round figures mix what the model learned with how hard
that round's images are. ``--fixed-set M`` sets the file's last M images aside: no round labels
them, and every round's model labels all of them, so that ``fixed_set`` in each round's entry is the
learning curve on the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from annotator.coco import import_coco
from annotator.learning import DEFAULT_ROUND_SIZE, RoundSettings, image_uncertainty, learning_round
from annotator.store import Project, ReviewState
from bench import effort
from model.data import CocoData
from model.evaluation import oks_sigmas


def add_round_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rounds K --round-size N --order list|uncertainty`` on ``effort.py``'s parser, and
    ``run_rounds`` as ``args.run_rounds``."""
    parser.add_argument("--rounds", type=int, metavar="K", help="with --weights: K rounds of labelling and fine-tuning")
    parser.add_argument(
        "--round-size", type=int, default=DEFAULT_ROUND_SIZE, metavar="N", help="images labelled a round (default 10)"
    )
    parser.add_argument(
        "--order",
        choices=("list", "uncertainty"),
        default="list",
        help="the next images: the file's order, or those whose proposals are least sure "
        "(annotator.learning.image_uncertainty); default list",
    )
    parser.add_argument(
        "--epochs",
        type=float,
        default=RoundSettings.epochs,
        help=f"passes over the images a round trains on (default {RoundSettings.epochs:g}, as the app)",
    )
    parser.add_argument(
        "--max-iters",
        type=int,
        default=RoundSettings.max_iterations,
        metavar="N",
        help=f"at most this many optimizer steps a round (default {RoundSettings.max_iterations}, as the app)",
    )
    parser.add_argument(
        "--fixed-set",
        type=int,
        default=0,
        metavar="M",
        help="set the file's last M images aside and label them with every round's model: the learning "
        "curve on the same images (default 0: none)",
    )
    parser.set_defaults(run_rounds=run_rounds)  # what effort.main runs when --rounds is given


def run_rounds(args: argparse.Namespace, data: CocoData) -> int:
    """``effort.py --rounds``: measures, prints the table (and the JSON object last); exit status."""
    if not args.weights or args.rounds < 1 or args.round_size < 1:
        print("error: --rounds needs --weights, and --rounds and --round-size at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.fixed_set < len(data.images):
        print(f"error: --fixed-set must leave images to label: {len(data.images)} in the file", file=sys.stderr)
        return 2
    settings = RoundSettings(device=args.device, epochs=args.epochs, max_iterations=args.max_iters)
    result = measure_rounds(
        data, args.weights, args.device, args.iou, args.rounds, args.round_size, args.order, settings, args.fixed_set
    )
    print(report_rounds(result, Path(args.weights).name))
    if args.json:
        print(json.dumps(result))
    return 0


def next_images(works: dict[int, effort.ImageWork], remaining: list[Any], count: int, order: str) -> list[Any]:
    """The next ``count`` image records: in the file's order, or the ones the model is least sure of
    (``image_uncertainty`` of their proposals' scores; ties in the file's order)."""
    if order == "list":
        return remaining[:count]
    doubt = {r.image_id: image_uncertainty([c.score for c in works[r.image_id].candidates]) for r in remaining}
    return sorted(remaining, key=lambda record: -doubt[record.image_id])[:count]


def label_fixed_set(
    model: effort.ModelProposals, records: list[Any], truths: dict[int, list[effort.Truth]], iou: float, sigmas
) -> dict[str, Any]:
    """The set-aside images labelled with ``model``, as from a fresh start: ours and by hand."""
    ours, manual = effort.Arm(), effort.Arm()
    for record in records:
        effort.label_image(model.work(record, truths[record.image_id]), iou, sigmas, ours, manual)
    return round_summary(ours, manual, len(records))


def round_summary(ours: effort.Arm, manual: effort.Arm, images: int) -> dict[str, Any]:
    """One round's figures: ours and by hand over the instances labelled in it."""
    summary, by_hand = ours.summary(), manual.summary()
    return {
        "images": images,
        "instances": len(ours.attempts),
        "actions_per_instance": summary["actions_per_instance"],
        "seconds_per_instance": summary["seconds_per_instance"],
        "accepted_as_is": summary["routes"]["accepted as-is"],
        "manual_path": summary["routes"]["polygon"],
        "unreached": summary["unreached"],
        "manual_actions_per_instance": by_hand["actions_per_instance"],
        "manual_seconds_per_instance": by_hand["seconds_per_instance"],
    }


def measure_rounds(
    data: CocoData,
    weights: str,
    device: str,
    iou: float,
    rounds: int,
    round_size: int,
    order: str,
    settings: RoundSettings | None = None,
    fixed_set: int = 0,
) -> dict[str, Any]:
    """``rounds`` rounds of ``round_size`` images (fewer when the images run out), each labelled with
    the model the previous round left in use; the rounds train as ``settings`` says (default: as the
    app, ``RoundSettings`` on ``device``). The last ``fixed_set`` images are no round's: every
    round's model labels them (``fixed_set`` in its entry). Returns the figures ``report_rounds`` prints."""
    truths, left_out = effort.read_truths(data)
    sigmas = oks_sigmas(data.labels.keypoint_names)
    settings = settings or RoundSettings(device=device)
    split = len(data.images) - fixed_set
    remaining, set_aside, current, trained = list(data.images[:split]), list(data.images[split:]), weights, None
    everything, all_manual, entries = effort.Arm(), effort.Arm(), []
    with (
        tempfile.TemporaryDirectory(prefix="effort-rounds-") as folder,
        Project.create(Path(folder) / "loop.annot", data.image_root) as project,
    ):
        import_coco(project, data.path)
        for index in range(rounds):
            if not remaining:
                break
            model = effort.ModelProposals(current, device, data)
            looked_at = remaining if order == "uncertainty" else remaining[:round_size]
            works = {r.image_id: model.work(r, truths[r.image_id]) for r in looked_at}
            chosen = next_images(works, remaining, round_size, order)
            ours = effort.Arm(current_category=everything.current_category)
            manual = effort.Arm(current_category=all_manual.current_category)
            for record in chosen:
                effort.label_image(works[record.image_id], iou, sigmas, ours, manual)
                project.set_review_state(project.image_by_file_name(record.file_name).id, ReviewState.DONE)
            everything.attempts += ours.attempts
            everything.rejects += ours.rejects
            everything.current_category = ours.current_category
            all_manual.attempts += manual.attempts
            all_manual.current_category = manual.current_category
            entry = round_summary(ours, manual, len(chosen))
            entry.update(round=index, weights=Path(current).name, train_seconds=0.0, train_iterations=0, model=None)
            if set_aside:
                entry["fixed_set"] = label_fixed_set(model, set_aside, truths, iou, sigmas)
            if trained is not None:
                entry.update(
                    train_seconds=round(trained.train_seconds, 1),
                    train_iterations=trained.iterations,
                    model=trained.reason,
                    held_out_keypoint_ap={"current": trained.current_keypoint_ap, "new": trained.new_keypoint_ap},
                )
            entries.append(entry)
            labelled = {record.image_id for record in chosen}
            remaining = [record for record in remaining if record.image_id not in labelled]
            if index + 1 < rounds and remaining:
                trained = learning_round(project, current, Path(folder) / f"round-{index + 1}", settings)
                current = trained.weights
    by_hand = all_manual.summary()
    return {
        "rounds": entries,
        "order": order,
        "fixed_set": fixed_set,
        "round_size": round_size,
        "iou": iou,
        "instances": len(everything.attempts),
        "left_out_without_mask": left_out,
        "actions_per_instance": everything.summary()["actions_per_instance"],
        "seconds_per_instance": everything.summary()["seconds_per_instance"],
        "manual_actions_per_instance": by_hand["actions_per_instance"],
        "manual_seconds_per_instance": by_hand["seconds_per_instance"],
    }


def report_rounds(result: dict[str, Any], what: str) -> str:
    """The table ``effort.main`` prints for ``--rounds``: a line a round, ours and by hand."""
    lines = [
        f"{what}, {result['order']} order, {result['round_size']} images a round; mask IoU >= {result['iou']:g}",
        f"{'round':<6}{'images':>7}{'instances':>10}{'actions/inst':>14}{'s/inst':>8}{'by hand s/inst':>16}"
        f"{'accepted':>10}{'steps':>7}{'train s':>9}{'fixed set':>11}  model",
    ]
    for entry in result["rounds"]:
        fixed = entry.get("fixed_set")
        cell = f"{fixed['actions_per_instance']:>6.2f}/{fixed['seconds_per_instance']:<4.1f}" if fixed else f"{'-':>11}"
        lines.append(
            f"{entry['round']:<6}{entry['images']:>7}{entry['instances']:>10}{entry['actions_per_instance']:>14.2f}"
            f"{entry['seconds_per_instance']:>8.1f}{entry['manual_seconds_per_instance']:>16.1f}"
            f"{entry['accepted_as_is']:>10.0%}{entry['train_iterations']:>7}{entry['train_seconds']:>9.0f}"
            + cell
            + f"  {entry['weights']}"
            + (f" ({entry['model']})" if entry["model"] else "")
        )
    fixed = result["rounds"][0].get("fixed_set")
    if fixed:
        lines.append(
            f"fixed set (actions/s an instance with each round's model): the last {fixed['images']} images, "
            f"{fixed['instances']} instances; by hand {fixed['manual_actions_per_instance']:.2f}, "
            f"{fixed['manual_seconds_per_instance']:.1f} s"
        )
    lines.append(
        f"all rounds: ours {result['actions_per_instance']:.2f} actions, {result['seconds_per_instance']:.1f} s an "
        f"instance; by hand {result['manual_actions_per_instance']:.2f}, {result['manual_seconds_per_instance']:.1f} s"
    )
    return "\n".join(lines)
