"""Auto-propose, Qt-free: the model drafts each unlabeled image as the person opens it. This is
the decisions only (tests/test_auto_propose.py); the window runs the jobs on the model thread and
tells :class:`AutoPropose` what happened.

The rules: an image is proposed when auto-propose is on, the model is loaded and free (one job at
a time), and the image is unlabeled with no instances, in a project that can be written; once each
time it is opened (a job that was cancelled, or whose result was dropped, does not start again
while the person stays on the image). A job for an image the person has left is cancelled, so
that the image in view comes next; a cancel only reaches a job once the model thread has started
it (its first progress report), so a job left before that is cancelled then. The person's own
cancel stops auto-propose for the image until it is opened again.
"""

from __future__ import annotations

from dataclasses import dataclass

from annotator.store import Project, ReviewState


@dataclass
class AutoPropose:
    """The state of auto-propose. The ``True`` returns mean: cancel the running job."""

    enabled: bool = False
    job_image: int = 0  # the image the running auto-propose job is for; 0 while none runs
    job_started: bool = False  # whether the model thread has started that job
    ran_here: bool = False  # whether it ran (or was stopped) for the image as now opened

    def set_enabled(self, enabled: bool) -> None:
        """Turning it on drafts the image in view at once, even if it was opened before."""
        self.enabled = enabled
        if enabled:
            self.ran_here = False

    def wants(self, project: Project | None, image_id: int, model_free: bool) -> bool:
        """Whether to propose for ``image_id`` (the image in view, 0 for none) now."""
        if not self.enabled or project is None or project.read_only or not image_id or self.ran_here or not model_free:
            return False  # a project that can only be read gets no proposals
        return project.image(image_id).state == ReviewState.UNLABELED and not project.instances(image_id)

    def submitted(self, image_id: int) -> None:
        """The window asked the model thread to propose for ``image_id``."""
        self.job_image, self.job_started, self.ran_here = image_id, False, True

    def image_opened(self, image_id: int) -> bool:
        """The person opened ``image_id``; True: the running job is for an image they left."""
        self.ran_here = False
        return bool(self.job_image) and self.job_image != image_id and self.job_started

    def job_progressed(self, image_in_view: int) -> bool:
        """The model thread reported progress; the first report of an auto-propose job means it
        has started. True: it is for an image the person left before it started."""
        if not self.job_image or self.job_started:
            return False
        self.job_started = True
        return self.job_image != image_in_view

    def job_finished(self) -> None:
        """The model thread is free again (whatever job ran)."""
        self.job_image, self.job_started = 0, False

    def cancelled_by_user(self) -> None:
        """The person cancelled the model's job: no auto-propose for this image until reopened."""
        self.ran_here = True

    def project_closed(self) -> bool:
        """Another project opens; True: a started job of this one's is running."""
        cancel = bool(self.job_image) and self.job_started
        self.job_image, self.job_started = 0, False
        return cancel
