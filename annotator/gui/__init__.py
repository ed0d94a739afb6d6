"""The Qt side of the annotator: the window wires panels, the canvas and its tools, and the
workers (model thread, training process) together. Everything here talks to the data through
:class:`annotator.gui.session.Session`, which owns the open project and its undo history."""
