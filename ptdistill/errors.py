"""The one exception type for mistakes a user can make: bad files, configs and checkpoints.

`train.py` and `evaluate.py` print these as one clear message, without a traceback.
"""


class UserError(Exception):
    """A problem in the user's input (a file, a config value, a checkpoint), with what to do about it."""
