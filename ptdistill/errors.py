"""The one exception type for mistakes a user can make: bad files, configs and checkpoints.

`train.py` and `evaluate.py` print these as one clear message, without a traceback.
"""

import functools
import logging
import sys

log = logging.getLogger("ptdistill")


class UserError(Exception):
    """A problem in the user's input (a file, a config value, a checkpoint), with what to do about it."""


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, e.g. one that Hydra's `instantiate` wrapped; None if there is none."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
    return None


def exits_on_user_error(main):
    """Wrap a CLI entry point: a user's mistake ends it with one clear line, anything else keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as error:
            if (user_error := find_user_error(error)) is None:
                raise
            log.error("%s", user_error)
            sys.exit(f"error: {user_error}")

    return wrapper
