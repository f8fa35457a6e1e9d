"""Job priorities: 0 (highest) … 9 (lowest), or one of four names.

One parser for every place a priority is accepted: ``enqueue --priority``,
``Runner.enqueue(priority=...)``, ``POST /jobs``, ``[topics.X] priority`` and
``Worker.priority``.
"""

from __future__ import annotations

from .errors import PriorityError

#: The priority names and the numbers they stand for.
PRIORITY_NAMES: dict[str, int] = {"critical": 0, "high": 1, "normal": 2, "low": 3}
HIGHEST = 0
LOWEST = 9

#: What a valid priority looks like, for error messages.
ACCEPTED = (
    f"an integer between {HIGHEST} and {LOWEST} or one of "
    + ", ".join(f"{name} ({number})" for name, number in PRIORITY_NAMES.items())
)


def parse_priority(value: object) -> int:
    """The priority number of ``value``: an int 0..9 or a lower-case name.

    >>> parse_priority("high"), parse_priority(7)
    (1, 7)

    Raises :class:`PriorityError` for anything else (booleans, floats, digit strings,
    other names); callers prefix what the priority belonged to.
    """
    if isinstance(value, str):
        number = PRIORITY_NAMES.get(value)
        if number is None:
            raise PriorityError(value, ACCEPTED)
        return number
    if isinstance(value, int) and not isinstance(value, bool) and HIGHEST <= value <= LOWEST:
        return value
    raise PriorityError(value, ACCEPTED)


def parse_priority_text(text: str) -> int:
    """A priority given as text (command line, environment): digits or a name, any case."""
    stripped = text.strip()
    if stripped.isdigit() or (stripped[:1] in "+-" and stripped[1:].isdigit()):
        return parse_priority(int(stripped))
    return parse_priority(stripped.lower())


__all__ = ["ACCEPTED", "HIGHEST", "LOWEST", "PRIORITY_NAMES", "PriorityError", "parse_priority", "parse_priority_text"]
