"""Leaf utilities shared by every layer (engine, methods, deployment, tools): distributed helpers
(:mod:`.dist`), checkpoint files (:mod:`.checkpoint`) and console output (:mod:`.log`). Nothing
here imports the rest of segproto, so any module may import it without a cycle."""
