"""Categories the model brings in: a proposal of a class the project lacks adds its category only as
proposed, which a person's lists, the exports and ``main.py info`` leave out until a label of it is
kept; an opening drops one whose proposals were all rejected; a person's category of its name takes
its place. Without a window."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from annotator import masks
from annotator.coco import export_coco, import_coco
from annotator.commands import EditConflict, UndoStack
from annotator.project_info import describe
from annotator.proposals import Proposal, ProposalCategories, store_proposals
from annotator.review import Review, ViewState
from annotator.schema import MIGRATIONS, SCHEMA_VERSION
from annotator.store import Project, Source
from annotator.yolo_export import export_yolo
from tests.files import write_json

HEIGHT, WIDTH = 30, 40


def square(x: int, y: int = 0, side: int = 6) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y : y + side, x : x + side] = True
    return mask


def proposal(name: str, x: int, keypoints: np.ndarray | None = None) -> Proposal:
    return Proposal(name, 0.9, masks.encode(square(x)), (x, 0, 6, 6), keypoints)


@pytest.fixture
def history(tmp_path: Path) -> UndoStack:
    """A project of two images whose one category is the person's 'face'."""
    project = Project.create(tmp_path / "p.annot", tmp_path)
    project.add_image("a.png", WIDTH, HEIGHT, "ha")
    project.add_image("b.png", WIDTH, HEIGHT, "hb")
    project.add_category("face")
    yield UndoStack(project)
    project.close()


def propose_stars(history: UndoStack) -> list[int]:
    """The model proposes two stars and a face on image 1; returns the stars' instance ids."""
    added = history.add_proposals(1, [proposal("star", 0), proposal("star", 10), proposal("face", 20)], "m@1")
    return [i.id for i in added if history.project.category(i.category_id).name == "star"]


def names(categories) -> list[str]:
    return [c.name for c in categories]


def yolo_names(project, folder: Path, **options) -> dict[int, str]:
    """The class names a YOLO export of ``project`` writes into its data.yaml."""
    export_yolo(project, folder, **options)
    entries = [line.split(": ", 1) for line in (folder / "data.yaml").read_text().splitlines() if line.startswith("  ")]
    return {int(class_id): json.loads(name) for class_id, name in entries}


def test_proposals_of_a_class_the_project_lacks_bring_a_proposed_category_lists_and_exports_leave_out(
    history: UndoStack, tmp_path: Path
) -> None:
    project = history.project
    propose_stars(history)
    star = project.category_by_name("star")
    assert star.proposed and not project.category_by_name("face").proposed
    assert names(project.categories()) == ["face", "star"]  # the canvas draws the star proposals
    assert names(project.kept_categories()) == ["face"]

    counts = export_coco(project, tmp_path / "kept.json")
    written = json.loads((tmp_path / "kept.json").read_text())
    assert counts["categories"] == 1 and [c["name"] for c in written["categories"]] == ["face"]
    assert yolo_names(project, tmp_path / "yolo-kept") == {0: "face"}

    # proposals written out by score take their categories along, so every annotation has its category
    export_coco(project, tmp_path / "all.json", proposals_from=0.5)
    written = json.loads((tmp_path / "all.json").read_text())
    assert [c["name"] for c in written["categories"]] == ["face", "star"] and len(written["annotations"]) == 3
    assert yolo_names(project, tmp_path / "yolo-all", proposals_from=0.5) == {0: "face", 1: "star"}

    lines = describe(project)
    assert "proposed by the model, not yet kept: star (2 proposals)" in lines
    assert not any(line.split()[1:2] == ["star"] for line in lines)  # not in the per-category rows


def test_accepting_one_proposal_makes_its_category_kept_and_undo_leaves_it_kept(history: UndoStack) -> None:
    project = history.project
    first, _ = propose_stars(history)
    Review(history, ViewState()).accept(1, [first])
    assert not project.category_by_name("star").proposed
    assert names(project.kept_categories()) == ["face", "star"]
    history.undo()
    assert project.instance(first).source == Source.MODEL and not project.category_by_name("star").proposed


@pytest.mark.parametrize("how", ["edit the mask", "draw a label", "move a label to it"])
def test_every_way_a_person_labels_with_a_proposed_category_keeps_it(history: UndoStack, how: str) -> None:
    project = history.project
    first, _ = propose_stars(history)
    star = project.category_by_name("star")
    if how == "edit the mask":
        history.set_mask(first, square(0, 10))
    elif how == "draw a label":
        history.add(2, star.id, mask=square(5, 5))
    else:
        face = project.category_by_name("face")
        drawn = history.add(2, face.id, mask=square(5, 5))
        history.set_category([drawn.id], star.id)
    assert not project.category_by_name("star").proposed


def test_a_category_whose_proposals_were_all_rejected_is_gone_once_the_project_is_opened_again(
    history: UndoStack,
) -> None:
    project = history.project
    stars = propose_stars(history)
    history.add_proposals(2, [proposal("moon", 0)], "m@1")
    Review(history, ViewState()).reject(1, stars)
    assert project.category_by_name("star").proposed  # this window's undo may still bring the stars back
    path = project.path
    with Project.open(path, tidy=False) as beside:  # a second connection of the window's program
        assert names(beside.categories()) == ["face", "star", "moon"]
    with Project.open(path) as again:
        assert names(again.categories()) == ["face", "moon"]  # moon still has its proposal
    # the window's undo of the rejection is then refused in one line, the project unchanged
    with pytest.raises(EditConflict, match="deleted category 2 since"):
        history.undo()
    assert [i.category_id for i in project.instances(1)] == [1]


def test_a_person_adding_a_category_named_as_a_proposed_one_keeps_it_with_its_proposals(history: UndoStack) -> None:
    project = history.project
    stars = propose_stars(history)
    star = project.category_by_name("star")
    added = project.add_category("star", color="#123456")
    assert (added.id, added.proposed, added.color) == (star.id, False, "#123456")
    assert project.category(star.id) == added and names(project.kept_categories()) == ["face", "star"]
    assert [project.instance(i).category_id for i in stars] == [star.id, star.id]
    with pytest.raises(ValueError, match="there is already a category named 'star'"):
        project.add_category("star")  # a kept one's name stays its own


def test_a_person_adding_it_with_other_keypoints_drops_the_proposals_keypoints_that_do_not_fit(
    history: UndoStack,
) -> None:
    project = history.project
    points = np.array([[1.0, 1.0, 2.0], [3.0, 3.0, 2.0]])
    (pose,) = history.add_proposals(1, [proposal("person", 0, points)], "m@1")
    assert project.category(pose.category_id).keypoints == ("kp1", "kp2")
    project.add_category("person", keypoints=["nose", "tail", "ear"])
    assert project.instance(pose.id).keypoints is None and project.instance(pose.id).source == Source.MODEL


def test_an_imported_file_naming_a_proposed_category_makes_it_the_files_with_its_proposals(
    history: UndoStack, tmp_path: Path
) -> None:
    project = history.project
    points = np.array([[1.0, 1.0, 2.0], [3.0, 3.0, 2.0]])
    (pose,) = history.add_proposals(1, [proposal("person", 0, points)], "m@1")
    person = {"id": 7, "name": "person", "keypoints": ["nose", "tail", "ear"], "skeleton": [[1, 2]]}
    coco = write_json(tmp_path / "people.json", {"images": [], "annotations": [], "categories": [person]})
    import_coco(project, coco)  # not refused for the proposed category's other keypoints
    kept = project.category_by_name("person")
    assert (kept.id, kept.proposed, kept.keypoints) == (7, False, ("nose", "tail", "ear"))
    assert project.instance(pose.id).category_id == 7 and project.instance(pose.id).keypoints is None


def test_renaming_a_category_to_a_proposed_ones_name_takes_its_proposals(history: UndoStack) -> None:
    project = history.project
    stars = propose_stars(history)
    face = project.category_by_name("face")
    renamed = project.update_category(face.id, name="star")
    assert names(project.categories()) == ["star"] and not renamed.proposed
    assert [project.instance(i).category_id for i in stars] == [face.id, face.id]


def test_undoing_a_category_deletion_takes_the_place_of_a_proposed_category_of_its_name(
    history: UndoStack,
) -> None:
    project = history.project
    star = project.add_category("star", color="#abcdef")
    project.add_category("tail")
    history.delete_category(star.id)
    # the model proposes stars meanwhile (main.py propose in another window): a new, proposed 'star'
    store_proposals(project, 1, [proposal("star", 0)], "m@1", ProposalCategories(project))
    proposed = project.category_by_name("star")
    assert proposed.proposed and proposed.id != star.id
    history.undo()
    assert project.category(star.id) == star and names(project.kept_categories()) == ["face", "star", "tail"]
    assert [i.category_id for i in project.instances(1)] == [star.id]  # its proposal came along
    assert not project.id_in_use("categories", proposed.id) and project.integrity_problems() == []


def test_a_project_of_the_previous_schema_opens_with_its_categories_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.annot"
    db = sqlite3.connect(path)
    for number, migration in enumerate(MIGRATIONS[: SCHEMA_VERSION - 1]):
        db.executescript(migration)
        db.execute(f"PRAGMA user_version = {number + 1}")
    db.execute("INSERT INTO meta VALUES ('image_root', '.')")
    db.execute("INSERT INTO categories (id, name, color) VALUES (1, 'cell', '#000000'), (2, 'empty', '#111111')")
    db.commit()
    db.close()
    with Project.open(path) as project:
        assert [(c.name, c.proposed) for c in project.categories()] == [("cell", False), ("empty", False)]
        assert names(project.kept_categories()) == ["cell", "empty"]  # unused, but a person's: opening keeps it
        assert project._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        with pytest.raises(sqlite3.IntegrityError):
            project._db.execute("UPDATE categories SET proposed = 2 WHERE id = 1")
