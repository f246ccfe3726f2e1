"""Command line: ``python -m segproto.data.synth.generate ROOT [--num-train N ...]``.

Generates the built-in synthetic benchmark (or reuses it) and prints the time taken.
"""

from __future__ import annotations

import argparse
import time

from segproto.data.synth.synthetic import generate_synthetic  # absolute: also run by its flat path


def main(argv: list[str] | None = None) -> None:
    """Parses arguments, generates, prints the wall time."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root")
    for key, default in (("num_train", 2000), ("num_val", 300), ("num_test", 300),
                         ("image_size", 128), ("seed", 0), ("num_workers", 0)):
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=default)
    ap.add_argument("--overwrite", action="store_true")
    args = vars(ap.parse_args(argv))
    t0 = time.perf_counter()
    root = generate_synthetic(args.pop("root"), **args)
    print(f"{root}: ready in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
