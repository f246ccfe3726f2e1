"""Analysis tools run on a trained work dir (``python -m segproto.tools.<name>``).

* :mod:`segproto.tools.embeddings`: a t-SNE picture of a checkpoint's pixel embeddings.
* :mod:`segproto.tools.convert`: dataset conversions and split files
  (``python -m segproto.tools.convert <dataset> SRC DST``).
"""
