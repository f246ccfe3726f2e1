"""Analysis tools run on a trained work dir (``python -m segproto.tools.<name>``).

* :mod:`segproto.tools.embeddings`: a t-SNE picture of a checkpoint's pixel embeddings.
"""
