"""Undoable edits that write through the project store. No Qt.

Every edit is recorded as the instances it touched, each as it was before and as it is after
(``None`` for "did not exist"). Undo puts the "before" versions back with
:meth:`Project.restore_instance` (same ids, same timestamps) and deletes what did not exist;
redo does the same with the "after" versions. That one rule covers adding, painting, deleting,
merging, splitting, accepting and changing a category, and it keeps working after the user has
moved to another image, because the records name their image. The stack has no size limit: a
record holds RLE strings, a few kilobytes each.

Another program may change the project meanwhile (issue 17). A step is undone or redone only while
what it touched is as the step left it: an instance another program deleted, edited or added under
an id the step would write is not overwritten; the step is refused (:class:`EditConflict`, one
line) and leaves the history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from annotator import masks
from annotator.proposals import Proposal, ProposalCategories, store_proposals
from annotator.store import Category, Instance, Project, ReviewState, Source
from model.errors import InputError


class EditConflict(InputError):
    """An undo or redo step refused because another program changed what it would write over."""


@dataclass(frozen=True)
class Change:
    """One instance before and after an edit; ``None`` where it did not exist."""

    before: Instance | None
    after: Instance | None

    @property
    def image_id(self) -> int:
        instance = self.after or self.before
        assert instance is not None
        return instance.image_id


@dataclass
class Command:
    """A named edit: instance changes and, optionally, a review-state change of one image, or
    categories added or deleted (``categories``: each as it was before and after, ``None`` where it
    did not exist; ``image_id`` 0 for an edit of no one image)."""

    text: str
    image_id: int
    changes: list[Change] = field(default_factory=list)
    state_before: ReviewState | None = None
    state_after: ReviewState | None = None
    categories: list[tuple[Category | None, Category | None]] = field(default_factory=list)

    def _apply(self, project: Project, forward: bool) -> None:
        with project.transaction():
            self._check_unchanged(project, forward)
            # a category comes into being before its instances, and goes after they have left it
            targets = [(after, before) if forward else (before, after) for before, after in self.categories]
            for target, other in targets:
                if target is not None and other is None:
                    project.add_category(
                        target.name, target.supercategory, target.color, target.keypoints, target.skeleton, target.id
                    )
            changes = self.changes if forward else list(reversed(self.changes))
            for change in changes:
                target = change.after if forward else change.before
                other = change.before if forward else change.after
                if target is not None:
                    project.restore_instance(target)
                elif other is not None and project.id_in_use("instances", other.id):
                    project.delete_instance(other.id)
            for target, other in targets:
                if target is None and other is not None:
                    project.delete_category(other.id)
            state = self.state_after if forward else self.state_before
            if state is not None:
                project.set_review_state(self.image_id, state)

    def _check_unchanged(self, project: Project, forward: bool) -> None:
        """Raises EditConflict unless every instance and category the step writes is as the step
        left it (redo: as it was before the step): another program changed the project since."""
        refused = f"cannot {'redo' if forward else 'undo'} '{self.text}': another program"
        found: dict[int, Instance | None] = {}  # what the step's first write of each instance must find
        for change in self.changes if forward else reversed(self.changes):
            found.setdefault((change.before or change.after).id, change.before if forward else change.after)
        for instance_id, expected in found.items():
            now = project.instance(instance_id) if project.id_in_use("instances", instance_id) else None
            if now != expected:
                happened = "deleted" if now is None else "added" if expected is None else "changed"
                raise EditConflict(project.path, f"{refused} {happened} instance {instance_id} since")
        left = self.state_before if forward else self.state_after  # the review state the step expects
        if left is not None and project.id_in_use("images", self.image_id):
            now = project.image(self.image_id).state
            # a state this program set since (an edit puts an image in review) is not another's change
            if now not in (left, project.states_written.get(self.image_id)):
                raise EditConflict(project.path, f"{refused} changed the review state of image {self.image_id} since")
        added: set[int] = set()  # the categories the step itself brings in before its instances
        for before, after in self.categories:
            leaving, coming = (before, after) if forward else (after, before)
            category = before or after
            if self._category_moved_on(project, leaving, coming):
                raise EditConflict(project.path, f"{refused} changed the categories since ('{category.name}')")
            if coming is not None and leaving is None:
                added.add(coming.id)
        # another program's opening drops a proposed category whose proposals were all rejected
        # (Project.drop_unused_proposed_categories): the step cannot bring them back into it
        written = (change.after if forward else change.before for change in self.changes)
        needed = {instance.category_id for instance in written if instance is not None} - added
        for category_id in sorted(needed):
            if not project.id_in_use("categories", category_id):
                raise EditConflict(project.path, f"{refused} deleted category {category_id} since")

    @staticmethod
    def _category_moved_on(project: Project, leaving: Category | None, coming: Category | None) -> bool:
        """Whether the project's categories changed so that the step cannot write this one: a category
        it deletes must be there; one it adds must find its id and name free, or held by a category
        the model proposed of that name, which gives way to it (``Project.add_category``)."""
        if leaving is not None:
            return not project.id_in_use("categories", leaving.id)
        assert coming is not None
        named = project.category_by_name(coming.name)
        if named is not None and not named.proposed:
            return True
        held = project.id_in_use("categories", coming.id)
        return held and (named is None or named.id != coming.id)

    def undo(self, project: Project) -> None:
        self._apply(project, forward=False)

    def redo(self, project: Project) -> None:
        self._apply(project, forward=True)


class UndoStack:
    """The project's edit history; ``listener`` hears about every change (for the GUI to redraw).

    Edits are made through :meth:`edit`, which runs them in one store transaction and records the
    result, so a failed edit leaves neither the store nor the history changed.
    """

    def __init__(self, project: Project, listener: Callable[[Command], None] | None = None) -> None:
        self.project = project
        self.listener = listener
        self._done: list[Command] = []
        self._undone: list[Command] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def undo_text(self) -> str:
        return self._done[-1].text if self._done else ""

    @property
    def redo_text(self) -> str:
        return self._undone[-1].text if self._undone else ""

    def __len__(self) -> int:
        return len(self._done)

    def clear(self) -> None:
        """Forgets the history (after a change made outside it, such as an import: SQLite may give
        an imported instance the id of a deleted one, which undoing that delete would overwrite)."""
        self._done.clear()
        self._undone.clear()

    def push(self, command: Command) -> Command:
        """Records a command whose effect is already in the store."""
        self._done.append(command)
        self._undone.clear()
        self._notify(command)
        return command

    def undo(self) -> Command | None:
        return self._step(self._done, self._undone, forward=False)

    def redo(self) -> Command | None:
        return self._step(self._undone, self._done, forward=True)

    def _step(self, source: list[Command], target: list[Command], forward: bool) -> Command | None:
        """Undoes (or redoes) the last command of ``source`` and moves it to ``target``. A step
        refused because another program changed what it would write (EditConflict) leaves the
        history; one that failed otherwise (busy, read-only) stays where it was."""
        if not source:
            return None
        command = source.pop()
        try:
            (command.redo if forward else command.undo)(self.project)
        except EditConflict:
            self._notify(command)
            raise
        except BaseException:
            source.append(command)
            raise
        target.append(command)
        self._notify(command)
        return command

    def _notify(self, command: Command) -> None:
        if self.listener is not None:
            self.listener(command)

    # -- the edits the tools make ---------------------------------------------------------------

    def add(self, image_id: int, category_id: int, text: str = "Add instance", **fields) -> Instance:
        """Adds an instance (``fields`` as for :meth:`Project.add_instance`)."""
        with self.project.transaction():
            after = self.project.add_instance(image_id, category_id, **fields)
        self.push(Command(text, image_id, [Change(None, after)]))
        return after

    def update(self, instance_id: int, text: str = "Edit instance", **fields) -> Instance:
        """Changes an instance (``fields`` as for :meth:`Project.update_instance`)."""
        before = self.project.instance(instance_id)
        with self.project.transaction():
            after = self.project.update_instance(instance_id, **fields)
        self.push(Command(text, before.image_id, [Change(before, after)]))
        return after

    def set_mask(self, instance_id: int, mask: np.ndarray, text: str = "Paint mask") -> Instance | None:
        """Replaces an instance's mask; an empty mask deletes the instance (returns None)."""
        if not mask.any():
            self.delete([instance_id], text)
            return None
        return self.update(instance_id, text, mask=mask)

    def delete(self, instance_ids: list[int], text: str = "Delete") -> None:
        if not instance_ids:
            return
        with self.project.transaction():
            changes = [Change(self.project.delete_instance(i), None) for i in instance_ids]
        self.push(Command(text, changes[0].image_id, changes))

    def accept(self, instance_ids: list[int], text: str = "Accept") -> None:
        """Marks proposals as accepted by a person: ``source=human``, score and model version kept."""
        changes = []
        with self.project.transaction():
            for instance_id in instance_ids:
                before = self.project.instance(instance_id)
                if before.source == Source.HUMAN:
                    continue
                after = self.project.update_instance(instance_id, source=Source.HUMAN)
                changes.append(Change(before, after))
        if changes:
            self.push(Command(text, changes[0].image_id, changes))

    def set_category(self, instance_ids: list[int], category_id: int, text: str = "Change category") -> list[Instance]:
        """Gives instances another category as one step; those that have it already are left out
        (nothing is recorded when none changes). Returns the instances changed, as they are now."""
        changes = []
        with self.project.transaction():
            for instance_id in instance_ids:
                before = self.project.instance(instance_id)
                if before.category_id != category_id:
                    changes.append(Change(before, self.project.update_instance(instance_id, category_id=category_id)))
        if changes:
            self.push(Command(text, changes[0].image_id, changes))
        return [c.after for c in changes if c.after is not None]

    def delete_category(self, category_id: int, move_to: int | None = None) -> Command:
        """Deletes a category as one step. Its instances (labels and proposals, on every image)
        first move to the category ``move_to``, which merges the two; without ``move_to`` the
        category must be unused (``ValueError`` otherwise). Keypoints move along where the two
        keypoint schemas have the same number of keypoints, else they are dropped."""
        category = self.project.category(category_id)
        with self.project.transaction():
            changes = []
            if move_to is not None:
                if move_to == category_id:
                    raise ValueError("a category cannot be merged into itself")
                self.project.category(move_to)  # KeyError for none
                moving = [i for i in self.project.iter_instances() if i.category_id == category_id]
                for before in moving:
                    changes.append(
                        Change(
                            before,
                            self.project.update_instance(
                                before.id, category_id=move_to, source=None, counts_as_edit=False
                            ),
                        )
                    )
            self.project.delete_category(category_id)
        text = f"Delete category '{category.name}'"
        if move_to is not None:
            text = f"Merge '{category.name}' into '{self.project.category(move_to).name}'"
        return self.push(Command(text, changes[0].image_id if changes else 0, changes, categories=[(category, None)]))

    def copy_labels(self, from_image: int, to_image: int) -> list[Instance]:
        """Copies the labels people kept on ``from_image`` (not its proposals) to ``to_image``, an
        image of the same size, as one step: same categories, masks, outlines and keypoints, as
        new labels drawn by a person. Returns the copies."""
        source, target = self.project.image(from_image), self.project.image(to_image)
        if (source.width, source.height) != (target.width, target.height):
            raise ValueError(
                f"{source.file_name} is {source.width}x{source.height}, this image {target.width}x{target.height}:"
                " labels copy only between images of one size"
            )
        labels = [i for i in self.project.instances(from_image) if i.source == Source.HUMAN]
        with self.project.transaction():
            copies = [
                self.project.add_instance(
                    to_image,
                    label.category_id,
                    # the outline when it was drawn as one (its mask is the outline's), else the mask
                    rle=label.rle if label.polygons is None else None,
                    polygons=label.polygons,
                    bbox=label.bbox if label.rle is None else None,
                    area=label.area if label.rle is None else None,
                    keypoints=label.keypoints,
                    iscrowd=label.iscrowd,
                )
                for label in labels
            ]
        if copies:
            self.push(
                Command(
                    f"Copy {len(copies)} labels from {source.file_name}", to_image, [Change(None, c) for c in copies]
                )
            )
        return copies

    def merge(self, instance_ids: list[int]) -> Instance:
        """Unites the masks of several instances into the first; the others are deleted."""
        if len(instance_ids) < 2:
            raise ValueError("merging needs at least two instances")
        instances = [self.project.instance(i) for i in instance_ids]
        if len({i.image_id for i in instances}) != 1:
            raise ValueError("only instances of one image can be merged")
        if any(i.rle is None for i in instances):
            raise ValueError("box-only instances cannot be merged")
        keep = instances[0]
        with self.project.transaction():
            after = self.project.update_instance(keep.id, rle=masks.merge([i.rle for i in instances]))
            changes = [Change(keep, after)]
            changes += [Change(self.project.delete_instance(i.id), None) for i in instances[1:]]
        self.push(Command(f"Merge {len(instances)} instances", keep.image_id, changes))
        return after

    def split(self, instance_id: int) -> list[Instance]:
        """Splits an instance into its connected parts (8-connected); the largest keeps the id,
        category and keypoints."""
        import cv2

        before = self.project.instance(instance_id)
        mask = before.mask
        if mask is None:
            raise ValueError("a box-only instance has no parts to split")
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if count <= 2:  # background and one part
            return [before]
        parts = sorted(range(1, count), key=lambda label: -int((labels == label).sum()))
        with self.project.transaction():
            first = self.project.update_instance(instance_id, mask=labels == parts[0])
            changes = [Change(before, first)]
            for label in parts[1:]:
                added = self.project.add_instance(before.image_id, before.category_id, mask=labels == label)
                changes.append(Change(None, added))
        self.push(Command(f"Split into {len(parts)} parts", before.image_id, changes))
        return [c.after for c in changes if c.after is not None]

    def add_proposals(
        self,
        image_id: int,
        proposals: list[Proposal],
        model_version: str,
        *,
        replace: bool = True,
        source: Source = Source.MODEL,
        text: str = "Propose",
        category_for: Callable[[str, int], Category] | None = None,
    ) -> list[Instance]:
        """Writes model output to the store (``annotator.proposals.store_proposals``) as one undo
        step; ``category_for`` defaults to adding missing categories with ``kp1..kpK`` names."""
        written = store_proposals(
            self.project,
            image_id,
            proposals,
            model_version,
            category_for or ProposalCategories(self.project),
            replace=replace,
            source=source,
        )
        changes = [Change(old, None) for old in written.deleted] + [Change(None, new) for new in written.added]
        moved = written.state_after != written.state_before
        if changes or moved:
            self.push(
                Command(
                    text,
                    image_id,
                    changes,
                    written.state_before if moved else None,
                    written.state_after if moved else None,
                )
            )
        return written.added

    def set_review_state(self, image_id: int, state: ReviewState, text: str = "Set review state") -> None:
        before = self.project.image(image_id).state
        if before == state:
            return
        self.project.set_review_state(image_id, state)
        self.push(Command(text, image_id, [], state_before=before, state_after=state))

    def record(
        self,
        text: str,
        image_id: int,
        changes: list[Change],
        state_before: ReviewState | None = None,
        state_after: ReviewState | None = None,
    ) -> Command:
        """Records an edit made by the caller inside its own transaction (e.g. a batch of proposals)."""
        return self.push(Command(text, image_id, changes, state_before, state_after))
