"""Real datasets: loaders for the published folder layouts (Cityscapes, Mapillary, PASCAL-Part and
the standard benchmarks), their class tables and split files, and the converters from the
official downloads."""
