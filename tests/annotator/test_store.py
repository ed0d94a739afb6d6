from __future__ import annotations

import math
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from annotator import masks
from annotator.store import MAX_ID, SCHEMA_VERSION, Project, ReviewState, Source, check_file_name
from model.errors import InputError


@pytest.fixture
def project(tmp_path: Path) -> Project:
    with Project.create(tmp_path / "p.annot", tmp_path / "images") as project:
        yield project


def _square(height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[10:20, 5:30] = True
    return mask


def test_new_project_uses_wal_foreign_keys_and_current_schema(project: Project) -> None:
    db = sqlite3.connect(project.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert project._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert project.integrity_check() == "ok"


def test_edit_is_visible_to_another_connection_as_soon_as_the_call_returns(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    instance = project.add_instance(image.id, category.id, mask=_square())
    with Project.open(project.path) as other:
        assert other.instances(image.id) == [instance]


def test_instance_box_and_area_come_from_the_mask(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    instance = project.add_instance(image.id, category.id, mask=_square())
    assert instance.bbox == (5.0, 10.0, 25.0, 10.0)
    assert instance.area == 250
    assert np.array_equal(instance.mask, _square())
    assert isinstance(instance.rle["counts"], str)


def test_ids_start_at_one(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    instance = project.add_instance(image.id, category.id, bbox=[1, 2, 3, 4])
    assert (image.id, category.id, instance.id) == (1, 1, 1)


def test_category_id_zero_is_refused(project: Project) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        project.add_category("background", id=0)
    assert project.categories() == []


def test_a_category_name_in_use_or_empty_is_refused_with_the_store_unchanged(project: Project) -> None:
    cat = project.add_category("cat")
    dog = project.add_category("dog")
    with pytest.raises(ValueError, match="already a category named 'cat' \\(id 1\\)"):
        project.add_category("cat")
    with pytest.raises(ValueError, match="already a category named 'cat'"):
        project.update_category(dog.id, name="cat")
    with pytest.raises(ValueError, match="name is empty"):
        project.update_category(dog.id, name="  ")
    assert project.categories() == [cat, dog]
    assert project.update_category(cat.id, name="cat", color="#123456").color == "#123456"  # its own name


def test_skeleton_must_name_existing_keypoints_one_based(project: Project) -> None:
    with pytest.raises(ValueError, match="1..2"):
        project.add_category("person", keypoints=["a", "b"], skeleton=[(0, 1)])
    person = project.add_category("person", keypoints=["a", "b"], skeleton=[(1, 2)])
    assert person.skeleton == ((1, 2),)


def test_keypoints_must_match_the_category_schema(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    person = project.add_category("person", keypoints=["a", "b"])
    with pytest.raises(ValueError, match="has 2 keypoints"):
        project.add_instance(image.id, person.id, mask=_square(), keypoints=[1, 2, 2])
    instance = project.add_instance(image.id, person.id, mask=_square(), keypoints=[1, 2, 2, 3, 4, 1])
    assert instance.keypoints_array.tolist() == [[1, 2, 2], [3, 4, 1]]
    assert instance.num_keypoints == 2


def test_mask_of_the_wrong_size_is_refused(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    with pytest.raises(ValueError, match="mask is"):
        project.add_instance(image.id, category.id, mask=np.zeros((10, 10), bool))
    assert project.instances(image.id) == []


def test_editing_a_proposal_makes_it_human_and_drops_the_stale_polygon(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    proposal = project.add_instance(
        image.id,
        category.id,
        polygons=[[5, 10, 30, 10, 30, 20, 5, 20]],
        score=0.9,
        source=Source.MODEL,
        model_version="m1",
    )
    assert proposal.polygons is not None
    edited = project.update_instance(proposal.id, mask=_square())
    assert edited.source == Source.HUMAN and edited.polygons is None
    assert edited.score == 0.9 and edited.model_version == "m1"


def test_changing_only_the_category_keeps_mask_and_polygon(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    cat, dog = project.add_category("cat"), project.add_category("dog")
    before = project.add_instance(image.id, cat.id, polygons=[[5, 10, 30, 10, 30, 20, 5, 20]])
    after = project.update_instance(before.id, category_id=dog.id)
    assert after.category_id == dog.id
    assert (after.rle, after.polygons, after.bbox) == (before.rle, before.polygons, before.bbox)


def test_deleted_instance_is_restored_exactly_for_undo(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    person = project.add_category("person", keypoints=["a"])
    instance = project.add_instance(
        image.id, person.id, mask=_square(), keypoints=[3, 4, 2], score=0.5, source=Source.MODEL, model_version="v"
    )
    deleted = project.delete_instance(instance.id)
    assert project.instances(image.id) == []
    assert project.restore_instance(deleted) == instance


def test_restoring_an_earlier_version_undoes_an_edit(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    original = project.add_instance(image.id, category.id, mask=_square())
    project.update_instance(original.id, mask=~_square())
    assert project.restore_instance(original) == original


def test_failed_transaction_leaves_nothing_behind(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    with pytest.raises(RuntimeError):
        with project.transaction():
            project.add_instance(image.id, category.id, mask=_square())
            project.set_review_state(image.id, ReviewState.DONE)
            raise RuntimeError("import failed half-way")
    assert project.instances(image.id) == []
    assert project.image(image.id).state == ReviewState.UNLABELED


def test_counts_by_review_state_and_category(project: Project) -> None:
    a = project.add_image("a.png", 64, 48, "h")
    b = project.add_image("b.png", 64, 48, "h")
    project.set_review_state(b.id, ReviewState.DONE)
    cat, dog = project.add_category("cat"), project.add_category("dog")
    project.add_instance(a.id, cat.id, mask=_square())
    project.add_instance(b.id, cat.id, mask=_square())
    project.add_instance(a.id, dog.id, mask=_square(), score=0.7, source=Source.MODEL)
    assert project.review_state_counts()[ReviewState.DONE] == 1
    assert project.review_state_counts()[ReviewState.UNLABELED] == 1
    assert project.instance_counts_by_category() == {cat.id: 2, dog.id: 1}
    assert project.instance_counts_by_category(Source.HUMAN) == {cat.id: 2, dog.id: 0}
    assert [i.image_id for i in project.iter_instances([ReviewState.DONE])] == [b.id]


def test_changing_the_number_of_keypoints_in_use_is_refused(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "h")
    person = project.add_category("person", keypoints=["a", "b"])
    project.add_instance(image.id, person.id, mask=_square(), keypoints=[1, 1, 2, 2, 2, 2])
    assert project.update_category(person.id, keypoints=("nose", "eye")).keypoints == ("nose", "eye")
    with pytest.raises(ValueError, match="cannot change"):
        project.update_category(person.id, keypoints=("nose",))


def test_image_root_is_stored_relative_so_a_moved_project_still_finds_images(tmp_path: Path) -> None:
    with Project.create(tmp_path / "a" / "p.annot", tmp_path / "a" / "images"):
        pass
    (tmp_path / "a").rename(tmp_path / "b")
    with Project.open(tmp_path / "b" / "p.annot") as project:
        assert project.image_root == (tmp_path / "b" / "images").resolve()


def test_project_from_a_newer_program_is_refused(project: Project) -> None:
    project._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InputError, match="newer"):
        Project.open(project.path)


def test_other_sqlite_files_and_garbage_are_not_projects(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(InputError, match="not a project file"):
        Project.open(other)
    garbage = tmp_path / "garbage.annot"
    garbage.write_bytes(b"\x00not sqlite" * 100)
    with pytest.raises(InputError, match="not a project file"):
        Project.open(garbage)
    assert garbage.read_bytes() == b"\x00not sqlite" * 100


@pytest.mark.parametrize(
    "name, normalised",
    [("a.png", "a.png"), ("sub/./b.png", "sub/b.png"), ("sub\\c.png", "sub/c.png"), ("x/../d.png", "d.png")],
)
def test_file_names_are_normalised_posix_paths(name: str, normalised: str) -> None:
    assert check_file_name(name) == normalised


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.png", "a/../../b.png", "C:\\x.png", "", "."])
def test_file_names_outside_the_image_root_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_file_name(name)


def test_rle_counts_are_text_everywhere(project: Project) -> None:
    rle = masks.encode(_square())
    assert isinstance(rle["counts"], str)
    assert np.array_equal(masks.decode(rle), _square())


def test_ids_of_deleted_instances_are_never_reused(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    first = project.add_instance(image.id, category.id, mask=_square())
    project.delete_instance(first.id)
    second = project.add_instance(image.id, category.id, mask=_square())
    assert second.id != first.id


@pytest.mark.parametrize(
    "table, id",
    [("image", 0), ("image", 2**63 - 1), ("category", 2**53), ("instance", 2**63), ("instance", MAX_ID + 1)],
)
def test_ids_the_store_cannot_go_on_from_are_refused(project: Project, table: str, id: int) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    add = {
        "image": lambda: project.add_image("b.png", 64, 48, "hash", id=id),
        "category": lambda: project.add_category("dog", id=id),
        "instance": lambda: project.add_instance(image.id, category.id, bbox=[1, 2, 3, 4], id=id),
    }[table]
    with pytest.raises(ValueError, match=f"{table} id must be at least 1 and at most {MAX_ID}"):
        add()
    assert project.add_instance(image.id, category.id, bbox=[1, 2, 3, 4], id=MAX_ID).id == MAX_ID
    assert project.add_instance(image.id, category.id, bbox=[1, 2, 3, 4]).id == MAX_ID + 1  # SQLite's next


def test_a_given_box_holding_the_mask_is_kept_with_its_area(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("person")
    whole = project.add_instance(image.id, category.id, mask=_square(), bbox=[4.5, 9.2, 40, 30], area=321.5)
    assert (whole.bbox, whole.area) == ((4.5, 9.2, 40.0, 30.0), 321.5)
    inside = project.add_instance(image.id, category.id, mask=_square(), bbox=[6, 10, 20, 10], area=1.0)
    assert (inside.bbox, inside.area) == ((5.0, 10.0, 25.0, 10.0), 250.0)
    with pytest.raises(ValueError, match="more than one image size outside"):
        project.add_instance(image.id, category.id, bbox=[1, 1, 1e300, 3])
    with pytest.raises(ValueError, match="finite"):
        project.add_instance(image.id, category.id, bbox=[1, 1, math.inf, 3])


def test_polygons_far_outside_the_image_are_stored_clipped(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    category = project.add_category("cat")
    instance = project.add_instance(image.id, category.id, polygons=[[0, 0, 30, 5, 1e10, 1e10]])
    assert max(max(polygon) for polygon in instance.polygons) == 64 + 64
    assert instance.mask.sum() == masks.area(masks.from_polygons(instance.polygons, 48, 64))


def test_an_instance_the_image_holds_already_is_not_added_again(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    cat, dog = project.add_category("cat"), project.add_category("dog")
    first = project.add_instance_if_new(image.id, cat.id, mask=_square())
    assert first is not None
    assert project.add_instance_if_new(image.id, cat.id, rle=masks.encode(_square()), score=0.5) is None
    assert project.add_instance_if_new(image.id, dog.id, mask=_square()) is not None
    assert project.add_instance_if_new(image.id, cat.id, bbox=[1, 2, 3, 4], id=50).id == 50
    assert project.add_instance_if_new(image.id, cat.id, bbox=[1, 2, 3, 4]) is None
    assert project.instance_count() == 3


def test_an_image_nobody_labelled_can_take_another_id(project: Project) -> None:
    image = project.add_image("a.png", 64, 48, "hash")
    other = project.add_image("b.png", 64, 48, "hash")
    assert project.change_image_id(image.id, 785) == replace(image, id=785)
    with pytest.raises(ValueError, match="in use"):
        project.change_image_id(785, other.id)
    project.add_instance(other.id, project.add_category("cat").id, mask=_square())
    with pytest.raises(ValueError, match="has instances"):
        project.change_image_id(other.id, 9)
    assert project.add_image("c.png", 64, 48, "hash").id == 786


@pytest.mark.parametrize("name", ["a\nb.png", "a\x00.png", "a\rb.png", "a\u2028b.png", "a\x85b.png", "\ud800.png"])
def test_file_names_with_control_characters_or_line_breaks_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="holds a control character or line break") as raised:
        check_file_name(name)
    assert "\n" not in str(raised.value) and len(str(raised.value).splitlines()) == 1
