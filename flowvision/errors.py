"""The one exception type for mistakes a user can fix.

The CLI prints ``str(error)`` on one line and exits with code 2; anything else is a bug and raises.
A number a user sets in the environment (``FLOWVISION_LOG_STEPS``, ``WORLD_SIZE``, the torchrun
timeouts) is read by ``env_number``, so a wrong one is such an error too.
"""


import os


class UserError(Exception):
    """Bad input, missing data or weights: the message says what is wrong and what to do."""


def env_number(name: str, default, hint: str, kind=int, above: float = 0, below: float = float("inf")):
    """The number in the environment variable ``name`` (``default`` when unset or blank): a ``kind``
    (int or float) with ``above`` < value < ``below``, else a UserError ``NAME='text': <hint>``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not above < value < below:
        raise UserError(f"{name}={text[:40]!r}: {hint}")
    return value
