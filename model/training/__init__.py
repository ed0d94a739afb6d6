"""Training: the loop and the jobs around it, each in its own module.

- ``options``: ``TrainOptions`` (stored in every checkpoint), the learning-rate schedule and the optimizer.
- ``events``: ``EventLog``, progress as JSON lines on stdout, a progress bar, TensorBoard scalars.
- ``comm``: ``Distributed``, this process's place under ``torchrun`` and the collectives the loop needs.
- ``checkpoint``: atomic, self-describing checkpoints, finding the newest, the random generators' state.
- ``hooks``: what the loop calls around its steps: the non-finite guard, progress, checkpoints, evaluation.
- ``loop``: ``train``, the loop itself; one step is data, forward, losses, backward, step.
- ``setup``: the model to train (from weights, a backbone or nothing) and the data split of a run.
- ``run``: ``run_training``, what ``main.py train`` runs in each process.

Importing this package imports none of them: ``main.py`` and the app pull in only what they use.
"""
