"""Analysis tools run on a trained work dir (``python -m segproto.tools.<name>``).

* :mod:`segproto.tools.embeddings`: a t-SNE picture of a checkpoint's pixel embeddings.
* :mod:`segproto.tools.complexity`: parameters, FLOPs and images/s of a deployable model
  (``python -m segproto.tools.complexity MODEL|CONFIG --size H W --device cpu``).
* :mod:`segproto.tools.convert`: dataset conversions and split files
  (``python -m segproto.tools.convert <dataset> SRC DST``).
"""
