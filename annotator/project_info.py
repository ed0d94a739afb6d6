"""``main.py info``: what a project holds, as lines for a person. Qt-free."""

from __future__ import annotations

from annotator.model_history import history_lines
from annotator.store import Project, Source


def describe(project: Project) -> list[str]:
    """The image folder, images per review state, instances per category (with how many of them
    are proposals nobody accepted, which export leaves out), and the model history."""
    lines = [
        f"project:     {project.path}",
        f"image root:  {project.image_root}",
        f"images:      {project.image_count()}",
    ]
    lines += [f"  {state.label:<11}{count}" for state, count in project.review_state_counts().items()]
    counts = project.instance_counts_by_category()
    proposals = sum(project.instance_counts_by_category(Source.MODEL).values())
    unreviewed = f", {proposals} of them proposals nobody accepted (export leaves those out)" if proposals else ""
    lines.append(f"instances:   {sum(counts.values())}{unreviewed}")
    for category in project.categories():
        keypoints = f"  ({category.num_keypoints} keypoints)" if category.keypoints else ""
        lines.append(f"  {category.id:>3} {category.name:<20}{counts[category.id]}{keypoints}")
    return lines + history_lines(project)
