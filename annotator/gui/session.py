"""The open project as the GUI sees it: the store, the undo history, the review rules, the current
image, the selection and the view state (hidden, locked, score threshold), with typed signals for
every change. The state and the rules are Qt-free (annotator.review); this object adds the
signals that panels, canvas and tools redraw on."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from annotator.commands import Command, UndoStack
from annotator.review import Review, ViewState
from annotator.store import Category, ImageRecord, Instance, Project, ReviewState


class Session(QObject):
    """Holds one open :class:`Project`; panels, canvas and tools share it."""

    image_changed = Signal(int)  # image id, or 0 for none
    instances_changed = Signal(int)  # image id whose instances changed
    selection_changed = Signal(list)  # instance ids
    view_state_changed = Signal()  # hidden / locked flags, score threshold
    categories_changed = Signal()
    review_state_changed = Signal(int)  # image id
    current_category_changed = Signal(int)  # category id
    history_changed = Signal()

    def __init__(self, project: Project, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.history = UndoStack(project, self._on_command)
        self.image_id = 0
        self.selection: list[int] = []
        self.view = ViewState()
        self.review = Review(self.history, self.view, self.review_state_changed.emit)
        self.current_category_id = 0
        categories = project.kept_categories()
        if categories:
            self.current_category_id = categories[0].id

    # -- current image --------------------------------------------------------------------------

    @property
    def image(self) -> ImageRecord | None:
        return self.project.image(self.image_id) if self.image_id else None

    def set_image(self, image_id: int) -> None:
        if image_id == self.image_id:
            return
        self.image_id = image_id
        self.selection = []
        self.image_changed.emit(image_id)
        self.selection_changed.emit([])

    def instances(self) -> list[Instance]:
        return self.project.instances(self.image_id) if self.image_id else []

    def shown_instances(self) -> list[Instance]:
        """The current image's instances that are shown (:meth:`ViewState.shows`), in drawing order."""
        return [i for i in self.instances() if self.view.shows(i, self.selection)]

    # -- selection and view state ---------------------------------------------------------------

    def select(self, instance_ids: list[int]) -> None:
        if instance_ids != self.selection:
            self.selection = list(instance_ids)
            self.selection_changed.emit(list(self.selection))

    @property
    def selected(self) -> Instance | None:
        """The first selected instance, if it still exists."""
        for instance_id in self.selection:
            if self.project.id_in_use("instances", instance_id):
                return self.project.instance(instance_id)
        return None

    def set_hidden(self, instance_id: int, hidden: bool) -> None:
        (self.view.hidden.add if hidden else self.view.hidden.discard)(instance_id)
        self.view_state_changed.emit()

    def set_locked(self, instance_id: int, locked: bool) -> None:
        (self.view.locked.add if locked else self.view.locked.discard)(instance_id)
        self.view_state_changed.emit()

    def set_score_threshold(self, threshold: float) -> None:
        self.view.score_threshold = threshold
        self.view_state_changed.emit()

    # -- categories -----------------------------------------------------------------------------

    @property
    def current_category(self) -> Category | None:
        """The category new instances get; never one the model only proposed (``Category.proposed``):
        the person's labels make a category theirs, not the model's guesses."""
        if self.current_category_id and self.project.id_in_use("categories", self.current_category_id):
            category = self.project.category(self.current_category_id)
            return None if category.proposed else category
        return None

    def set_current_category(self, category_id: int) -> None:
        if category_id != self.current_category_id:
            self.current_category_id = category_id
            self.current_category_changed.emit(category_id)

    def category_for_new_shapes(self) -> Category | None:
        """The category the next new instance gets: the current one, else the project's first (a
        category of a proposal the person kept counts); None: the first shape makes 'object'."""
        category = self.current_category
        if category is None:
            existing = self.project.kept_categories()
            category = existing[0] if existing else None
        return category

    def ensure_category(self) -> Category:
        """The category new instances get (:meth:`category_for_new_shapes`), made and made current
        when the project has none."""
        category = self.category_for_new_shapes() or self.project.add_category("object")
        if category.id != self.current_category_id:
            self.current_category_id = category.id
            self.categories_changed.emit()
        return category

    def notify_categories(self) -> None:
        self.categories_changed.emit()
        if self.image_id:
            self.instances_changed.emit(self.image_id)

    # -- review state ---------------------------------------------------------------------------

    def set_review_state(self, image_id: int, state: ReviewState) -> None:
        self.history.set_review_state(image_id, state)

    def mark_in_review(self) -> None:
        """A person edited the current image (:meth:`Review.mark_in_review`)."""
        self.review.mark_in_review(self.image_id)

    # -- history --------------------------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        existing = [i for i in self.selection if self.project.id_in_use("instances", i)]
        if existing != self.selection:
            self.select(existing)
        if command.state_before is not None or command.state_after is not None:
            self.review_state_changed.emit(command.image_id)
        if command.categories:  # may touch the instances of every image, the one in view too
            if not self.project.id_in_use("categories", self.current_category_id):
                self.current_category_id = 0
            self.categories_changed.emit()
            if self.image_id and self.image_id != command.image_id:
                self.instances_changed.emit(self.image_id)
        if command.changes:
            self.instances_changed.emit(command.image_id)
        self.history_changed.emit()

    def changed_elsewhere(self) -> None:
        """Another program changed the project (annotator.gui.project_watch): what it deleted leaves
        the selection and the current category, and the views read the store again. The rest of the
        selection, the view state and the history stay (a step that would overwrite the other
        program's change is refused when undone: annotator.commands.EditConflict)."""
        if self.image_id and not self.project.id_in_use("images", self.image_id):
            self.set_image(0)
        existing = [i for i in self.selection if self.project.id_in_use("instances", i)]
        if existing != self.selection:
            self.select(existing)
        if self.current_category_id and not self.project.id_in_use("categories", self.current_category_id):
            self.current_category_id = 0
        self.notify_categories()
        self.history_changed.emit()

    def undo(self) -> Command | None:
        command = self.history.undo()
        if command is not None and command.image_id and command.image_id != self.image_id:
            self.set_image(command.image_id)
        return command

    def redo(self) -> Command | None:
        command = self.history.redo()
        if command is not None and command.image_id and command.image_id != self.image_id:
            self.set_image(command.image_id)
        return command
