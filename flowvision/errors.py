"""The one exception type for mistakes a user can fix.

The CLI prints ``str(error)`` on one line and exits with code 2; anything else is a bug and raises.
"""


class UserError(Exception):
    """Bad input, missing data or weights: the message says what is wrong and what to do."""
