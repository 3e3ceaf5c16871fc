"""The one exception type for mistakes a user can fix.

The CLI prints ``str(error)`` on one line and exits with code 2; anything else is a bug and raises.
A number a user sets in the environment (``FLOWVISION_LOG_STEPS``, ``WORLD_SIZE``, the torchrun
timeouts) is read by ``env_number``, so a wrong one is such an error too.
"""


import os


class UserError(Exception):
    """Bad input, missing data or weights: the message says what is wrong and what to do."""


class Diverged(UserError):
    """A training loss that stopped being finite: a setting (learning rate, λ) the run cannot train with.
    One line like any UserError; a sweep (``frontier``) records the point as diverged and goes on."""


def closest(word: str, choices):
    """The one of ``choices`` a mistyped ``word`` most likely meant (difflib's ratio ≥ 0.6, case
    ignored), else None."""
    import difflib

    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(word: str, choices) -> str:
    """' (did you mean epochs?)' for ``closest``, else ''."""
    near = closest(word, choices)
    return f" (did you mean {near}?)" if near else ""


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
