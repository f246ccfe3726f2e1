"""The one exception type raised for bad configs."""

from __future__ import annotations

from typing import Sequence


class ConfigError(ValueError):
    """A config file, override or dict failed to load or validate.

    Every problem found is one line of the form ``<file>: <message>``; all of them are kept in
    :attr:`errors` and shown together, so one run reports every typo at once.

    Attributes:
        errors: One message per problem.
    """

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        if len(self.errors) == 1:
            message = self.errors[0]
        else:
            message = f"{len(self.errors)} config errors:\n" + "\n".join(
                f"  {e}" for e in self.errors)
        super().__init__(message)
