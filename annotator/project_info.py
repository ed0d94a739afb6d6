"""``main.py info``: what a project holds, as lines for a person. Qt-free."""

from __future__ import annotations

from annotator.model_history import history_lines
from annotator.store import Project, Source
from annotator.wording import counted


def describe(project: Project) -> list[str]:
    """The image folder, images per review state, instances per category (with how many of them
    are proposals nobody accepted, which export leaves out), the categories the model proposed that
    nobody kept a label of yet (apart: they are not the project's until then), and the model
    history."""
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
    for category in project.kept_categories():
        keypoints = f"  ({category.num_keypoints} keypoints)" if category.keypoints else ""
        lines.append(f"  {category.id:>3} {category.name:<20}{counts[category.id]}{keypoints}")
    proposed = [c for c in project.categories() if c.proposed]
    if proposed:
        named = ", ".join(f"{c.name} ({counted(counts[c.id], 'proposal')})" for c in proposed)
        lines.append(f"proposed by the model, not yet kept: {named}")
    return lines + history_lines(project)
