"""The canvas: the image, the instances over it, and the active tool's feedback.

Coordinates: image coordinates are continuous pixels as in COCO, pixel ``(row i, col j)`` covers
``[j, j+1) x [i, i+1)``. The view maps them to widget pixels as ``widget = image * scale + offset``
(``scale`` in screen pixels per image pixel). Tools receive image coordinates only.

Painting is a fixed order of layers (background, image, masks, keypoints, highlight, tool); the
image and mask layers draw only what is visible, at the resolution of one pyramid level, so a
frame costs about the window's size whatever the image's or the masks' (docs/decisions/0005-canvas.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen, QResizeEvent, QWheelEvent
from PySide6.QtWidgets import QWidget

from annotator.gui.overlays import MaskOverlay, OverlayCache
from annotator.gui.pyramid import ImagePyramid
from annotator.gui.session import Session
from annotator.store import Category, Instance, Source

MIN_SCALE, MAX_SCALE = 1 / 256, 64.0
MASK_OPACITY = 0.40
HIGHLIGHT_OPACITY = 0.60
KEYPOINT_RADIUS = 4.0  # screen pixels
OUTLINE_WIDTH = 1.5  # screen pixels
OUTLINE_DASHES = [4.0, 2.0]  # proposals' outlines: dash, gap, in outline widths
OUTLINE_MARGIN = 4.0  # screen pixels around the view in which outlines are still drawn
LABEL_ALL_BELOW = 25  # instances; above, only the selected and hovered get a name tag
NO_IMAGE = "Open a folder of images or a project (File menu)"  # the empty canvas's text
WHEEL_STEP = 1.0015  # zoom factor per 1/8 degree of wheel rotation: 120 units (one notch) ~ x1.2


@dataclass
class ToolEvent:
    """A mouse event as a tool sees it: position in image coordinates."""

    pos: QPointF
    widget_pos: QPointF
    button: Qt.MouseButton
    buttons: Qt.MouseButton
    modifiers: Qt.KeyboardModifier


class Canvas(QWidget):
    cursor_moved = Signal(float, float)  # image coordinates
    zoom_changed = Signal(float)  # screen pixels per image pixel
    hover_changed = Signal(int)  # instance id, 0 for none
    message = Signal(str)  # a line for the status bar

    def __init__(self, session: Session | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(200, 150)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.session: Session | None = None
        self.pyramid: ImagePyramid | None = None
        self.placeholder = NO_IMAGE  # shown while there is no image
        self.scale = 1.0
        self.offset = QPointF(0, 0)
        self.hover_id = 0
        self.tool = None  # annotator.gui.tools.base.Tool
        self._overlays = OverlayCache()
        self._instances: list[Instance] = []
        self._categories: dict[int, Category] = {}
        self._pan_from: QPointF | None = None
        self._fit_pending = True
        self.last_level = 0  # pyramid level of the last frame (tests, status)
        # View > Hide labels and proposals, View > Overlay opacity: to judge the image beneath
        self.overlays_visible = True
        self.overlay_opacity = 1.0
        if session is not None:
            self.set_session(session)

    # -- data -----------------------------------------------------------------------------------

    def set_session(self, session: Session | None) -> None:
        if self.session is not None:
            for signal in (
                self.session.instances_changed,
                self.session.selection_changed,
                self.session.view_state_changed,
                self.session.categories_changed,
            ):
                signal.disconnect(self.reload)
        self.session = session
        self._overlays.clear()
        if session is not None:
            session.instances_changed.connect(self.reload)
            session.selection_changed.connect(self.reload)
            session.view_state_changed.connect(self.reload)
            session.categories_changed.connect(self.reload)
        self.reload()

    def set_pyramid(self, pyramid: ImagePyramid | None, placeholder: str = NO_IMAGE) -> None:
        """Shows an image, or without one the ``placeholder`` text (why there is none)."""
        self.pyramid = pyramid
        self.placeholder = placeholder
        self._overlays.clear()
        self.hover_id = 0
        if self.tool is not None:
            self.tool.cancel()
        self.fit()
        self.reload()

    def reload(self, *_: object) -> None:
        """Re-reads the current image's instances and categories from the store."""
        if self.session is None or not self.session.image_id or self.pyramid is None:
            self._instances, self._categories = [], {}
        else:
            self._categories = {c.id: c for c in self.session.project.categories()}
            self._instances = self.session.shown_instances()
        self.update()

    @property
    def instances(self) -> list[Instance]:
        """The instances drawn, in drawing order."""
        return list(self._instances)

    def category_color(self, category_id: int) -> QColor:
        category = self._categories.get(category_id)
        return QColor(category.color if category else "#888888")

    def overlay(self, instance: Instance) -> MaskOverlay:
        return self._overlays.get(instance, self.category_color(instance.category_id))

    def instance_at(self, pos: QPointF, proposals_only: bool = False) -> Instance | None:
        """The smallest drawn instance whose mask holds image point ``pos``."""
        hits = [
            i
            for i in self._instances
            if self.overlay(i).contains(pos.x(), pos.y()) and (not proposals_only or i.source == Source.MODEL)
        ]
        return min(hits, key=lambda i: i.area, default=None)

    # -- view -----------------------------------------------------------------------------------

    def image_to_widget(self, point: QPointF) -> QPointF:
        return QPointF(point.x() * self.scale + self.offset.x(), point.y() * self.scale + self.offset.y())

    def widget_to_image(self, point: QPointF) -> QPointF:
        return QPointF((point.x() - self.offset.x()) / self.scale, (point.y() - self.offset.y()) / self.scale)

    def fit(self) -> None:
        if self.pyramid is None or self.width() <= 0:
            return
        margin = 8
        scale = min(
            (self.width() - 2 * margin) / self.pyramid.width, (self.height() - 2 * margin) / self.pyramid.height
        )
        self.set_view(max(MIN_SCALE, min(MAX_SCALE, scale)), None)
        self._fit_pending = False

    def zoom_1to1(self) -> None:
        self.zoom_to(1.0, QPointF(self.width() / 2, self.height() / 2))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        self.zoom_to(self.scale * factor, anchor or QPointF(self.width() / 2, self.height() / 2))

    def zoom_to(self, scale: float, anchor: QPointF) -> None:
        """Zooms keeping the image point under widget point ``anchor`` in place."""
        scale = max(MIN_SCALE, min(MAX_SCALE, scale))
        fixed = self.widget_to_image(anchor)
        self.offset = QPointF(anchor.x() - fixed.x() * scale, anchor.y() - fixed.y() * scale)
        self.scale = scale
        self._fit_pending = False
        self.zoom_changed.emit(scale)
        self.update()

    def set_view(self, scale: float, offset: QPointF | None) -> None:
        self.scale = scale
        if offset is None and self.pyramid is not None:  # centred
            offset = QPointF(
                (self.width() - self.pyramid.width * scale) / 2, (self.height() - self.pyramid.height * scale) / 2
            )
        self.offset = offset or QPointF(0, 0)
        self.zoom_changed.emit(scale)
        self.update()

    def pan_by(self, dx: float, dy: float) -> None:
        self.offset += QPointF(dx, dy)
        self.update()

    def center_on(self, point: QPointF) -> None:
        """Pans so that image point ``point`` is at the centre of the widget."""
        self.offset = QPointF(self.width() / 2 - point.x() * self.scale, self.height() / 2 - point.y() * self.scale)
        self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        if self._fit_pending:
            self.fit()
        super().resizeEvent(event)

    # -- painting -------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        self._paint_background(painter)
        if self.pyramid is not None:
            self.last_level = level = self.pyramid.level_for_scale(self.scale)
            visible = QRectF(
                self.widget_to_image(QPointF(0, 0)), self.widget_to_image(QPointF(self.width(), self.height()))
            )
            self._paint_image(painter, level, visible)
            if self.overlays_visible:
                self._paint_overlays(painter, level, visible)
            if self.tool is not None:
                self.tool.paint(painter)
        painter.end()

    def _paint_overlays(self, painter: QPainter, level: int, visible: QRectF) -> None:
        """Masks, outlines, keypoints and names, at the overlay opacity."""
        painter.save()
        painter.setOpacity(self.overlay_opacity)
        painter.translate(self.offset)
        painter.scale(self.scale, self.scale)
        # outlines reach past the view by their width, so a margin of a few screen pixels
        margin = OUTLINE_MARGIN / self.scale
        visible.adjust(-margin, -margin, margin, margin)
        self._paint_masks(painter, level, visible)
        self._paint_highlight(painter, level, visible)
        painter.restore()
        self._overlays.end_frame()
        painter.save()
        painter.setOpacity(self.overlay_opacity)
        self._paint_keypoints(painter)
        self._paint_labels(painter)
        painter.restore()

    def set_overlays_visible(self, visible: bool) -> None:
        self.overlays_visible = visible
        self.update()

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay_opacity = min(max(opacity, 0.0), 1.0)
        self.update()

    def _paint_background(self, painter: QPainter) -> None:
        painter.fillRect(self.rect(), QColor(48, 48, 48))
        if self.pyramid is None:
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(
                self.rect().adjusted(20, 0, -20, 0),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                self.placeholder,
            )

    def _paint_image(self, painter: QPainter, level: int, visible: QRectF) -> None:
        image, (x, y, w, h) = self.pyramid.region(
            level, visible.left(), visible.top(), visible.right(), visible.bottom()
        )
        if image.isNull():
            return
        # Magnified: nearest, so single pixels stay crisp for pixel-level editing.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.scale * 2**level < 1.0)
        target = QRectF(self.image_to_widget(QPointF(x, y)), self.image_to_widget(QPointF(x + w, y + h)))
        painter.drawImage(target, image)

    def _paint_masks(self, painter: QPainter, level: int, visible: QRectF) -> None:
        """Mask fills, then outlines (painter in image coordinates). Fills come in tiles of the
        pyramid level's resolution, drawn with nearest sampling: at level 0 each mask pixel
        covers exactly its image pixel."""
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        selected = set(self.session.selection) if self.session else set()
        for instance in self._instances:
            tiles = self._overlays.fill_tiles(self.overlay(instance), level, visible)
            if tiles:
                emphasised = instance.id in selected or instance.id == self.hover_id
                painter.setOpacity(self.overlay_opacity * (HIGHLIGHT_OPACITY if emphasised else MASK_OPACITY))
            for rect, tile in tiles:
                painter.drawImage(rect, tile)
        painter.setOpacity(self.overlay_opacity)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for instance in self._instances:
            pen = QPen(self.category_color(instance.category_id), OUTLINE_WIDTH)
            if instance.source == Source.MODEL:
                pen.setDashPattern(OUTLINE_DASHES)  # proposals not yet accepted
            self._draw_outline(painter, self.overlay(instance), pen, level, visible)

    def _draw_outline(self, painter: QPainter, overlay: MaskOverlay, pen: QPen, level: int, visible: QRectF) -> None:
        """The part of ``overlay``'s outline in ``visible``, the pen's width in screen pixels."""
        if not overlay.rect.intersects(visible):
            return  # (nor traced, while the instance stays out of view)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        # the dashes' period in image pixels: clipped stretches start in step with it
        period = sum(OUTLINE_DASHES) * OUTLINE_WIDTH / self.scale
        painter.drawPath(overlay.outline(level, visible, period))

    def _paint_highlight(self, painter: QPainter, level: int, visible: QRectF) -> None:
        """Selection and hover outlines, on top of every mask."""
        if self.session is None:
            return
        for instance in self._instances:
            selected = instance.id in self.session.selection
            if not selected and instance.id != self.hover_id:
                continue
            overlay = self.overlay(instance)
            pen = QPen(QColor(255, 255, 255) if selected else QColor(255, 255, 160), 2.5 if selected else 2.0)
            self._draw_outline(painter, overlay, pen, level, visible)
            if selected:
                pen = QPen(QColor(0, 0, 0), 1.0, Qt.PenStyle.DashLine)
                pen.setCosmetic(True)
                painter.setPen(pen)
                painter.drawRect(overlay.rect)

    def _paint_keypoints(self, painter: QPainter) -> None:
        """Skeleton lines between labelled keypoints, then the points: filled for visible (v=2),
        hollow for labelled but occluded (v=1); unlabelled (v=0) are not drawn. Screen space, so
        that points keep their size at any zoom."""
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for instance in self._instances:
            points = instance.keypoints_array
            category = self._categories.get(instance.category_id)
            if points is None or category is None:
                continue
            color = self.category_color(instance.category_id)
            screen = [self.image_to_widget(QPointF(x, y)) for x, y, _ in points]
            painter.setPen(QPen(color.lighter(130), 2.0))
            for a, b in category.skeleton:
                if 1 <= a <= len(points) and 1 <= b <= len(points) and points[a - 1, 2] > 0 and points[b - 1, 2] > 0:
                    painter.drawLine(screen[a - 1], screen[b - 1])
            radius = KEYPOINT_RADIUS + (1.5 if instance.id in (self.session.selection if self.session else []) else 0)
            for point, (_, _, v) in zip(screen, points):
                if v <= 0:
                    continue
                painter.setPen(QPen(QColor(0, 0, 0), 1.0))
                painter.setBrush(QBrush(color) if v >= 2 else QBrush(QColor(255, 255, 255, 200)))
                painter.drawEllipse(point, radius, radius)

    def _paint_labels(self, painter: QPainter) -> None:
        """Category name (and score for proposals) at the top-left of each box: for every
        instance while there are few, otherwise for the selected and hovered ones only (dozens of
        overlapping tags hide the image)."""
        if self.scale * max(self.pyramid.width, self.pyramid.height) < 200:
            return
        selected = set(self.session.selection) if self.session else set()
        labelled = (
            self._instances
            if len(self._instances) <= LABEL_ALL_BELOW
            else [i for i in self._instances if i.id in selected or i.id == self.hover_id]
        )
        for instance in labelled:
            category = self._categories.get(instance.category_id)
            text = category.name if category else "?"
            if instance.source == Source.MODEL and instance.score is not None:
                text += f" {instance.score:.2f}"
            self.paint_tag(
                painter,
                self.image_to_widget(QPointF(instance.bbox[0], instance.bbox[1])),
                text,
                self.category_color(instance.category_id).darker(150),
            )

    def paint_tag(self, painter: QPainter, corner: QPointF, text: str, color: QColor) -> None:
        """A small label of white text on ``color`` standing on ``corner`` (widget pixels), or
        hanging from it where it would leave the top of the widget."""
        font = painter.font()
        font.setPointSizeF(8.5)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        box = QRectF(
            corner.x(), corner.y() - metrics.height() - 2, metrics.horizontalAdvance(text) + 6, metrics.height() + 2
        )
        if box.top() < 0:
            box.moveTop(corner.y())
        painter.fillRect(box, color)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    # -- input ----------------------------------------------------------------------------------

    def _tool_event(self, event: QMouseEvent) -> ToolEvent:
        widget_pos = event.position()
        return ToolEvent(
            self.widget_to_image(widget_pos), widget_pos, event.button(), event.buttons(), event.modifiers()
        )

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus()
        if event.button() == Qt.MouseButton.MiddleButton:
            self._pan_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if self.pyramid is not None and self.tool is not None and self.tool.press(self._tool_event(event)):
            self.update()
            return
        if event.button() == Qt.MouseButton.LeftButton:  # nothing took the click: pan
            self._pan_from = event.position()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        position = event.position()
        if self._pan_from is not None:
            delta = position - self._pan_from
            self._pan_from = position
            self.pan_by(delta.x(), delta.y())
            return
        image_pos = self.widget_to_image(position)
        self.cursor_moved.emit(image_pos.x(), image_pos.y())
        if self.pyramid is None:
            return
        if self.tool is not None and self.tool.move(self._tool_event(event)):
            self.update()
        if event.buttons() == Qt.MouseButton.NoButton:
            hovered = self.instance_at(image_pos)
            hover_id = hovered.id if hovered else 0
            if hover_id != self.hover_id:
                self.hover_id = hover_id
                self.hover_changed.emit(hover_id)
                self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            self.unsetCursor()
            if self.tool is not None:
                self.setCursor(self.tool.cursor)
            return
        if self.pyramid is not None and self.tool is not None and self.tool.release(self._tool_event(event)):
            self.update()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.pyramid is not None and self.tool is not None and self.tool.double_click(self._tool_event(event)):
            self.update()
            return
        super().mouseDoubleClickEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta()
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier and not delta.isNull():
            self.pan_by(delta.y() / 2, delta.x() / 2)  # shift+wheel scrolls sideways
        elif delta.y():
            self.zoom_to(self.scale * WHEEL_STEP ** delta.y(), event.position())
        elif not event.pixelDelta().isNull():  # touchpads: two-finger scroll pans
            self.pan_by(event.pixelDelta().x(), event.pixelDelta().y())
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self.tool is not None and self.tool.key(event):
            self.update()
            return
        super().keyPressEvent(event)

    def leaveEvent(self, event) -> None:
        if self.hover_id:
            self.hover_id = 0
            self.hover_changed.emit(0)
            self.update()
        super().leaveEvent(event)

    # for tools
    def screen_distance(self, a: QPointF, b: QPointF) -> float:
        """Distance in screen pixels between two image points."""
        return ((a.x() - b.x()) ** 2 + (a.y() - b.y()) ** 2) ** 0.5 * self.scale
