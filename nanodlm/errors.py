"""The one exception type the CLI turns into a one-line message (no traceback)."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix."""
