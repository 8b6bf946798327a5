"""Text from payloads made safe for a log line: control, bidi and line-break characters escaped."""

import unicodedata

# Longer than any Stripe id or event type; a longer value is cut, marked with an ellipsis.
MAX_LOGGED_CHARACTERS = 200
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escaped(character: str) -> str:
    if unicodedata.category(character) not in _UNSAFE_CATEGORIES:
        return character
    code = ord(character)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else (f"\\U{code:08x}")
    )


def loggable(value: object) -> str:
    """`value` as one line of visible text: an id stays as it is; a newline can forge no line.

    Backslashes are doubled first, so that an escape in the output always stands for a
    character that was escaped, never for one the payload spelled out.
    """
    text = "" if value is None else str(value)
    cut = len(text) > MAX_LOGGED_CHARACTERS
    text = text[:MAX_LOGGED_CHARACTERS].replace("\\", "\\\\")
    safe = "".join(_escaped(character) for character in text)
    return safe + "…" if cut else safe
