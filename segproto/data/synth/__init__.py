"""The procedural benchmark: its class table, drawing canvas, objects and scenes, the writer that
renders a dataset folder once, and its command line (``python -m segproto.data.synth.generate``)."""
