"""Text that people read as given: names of who acted, and notes.

A name is what an officer reads to learn who acted, in the dashboard, in an alert's
history and in a notification. Characters that are not seen but change what is shown
(right-to-left overrides, zero-width joiners, terminal escapes, NUL, line breaks) would
let a name read as someone else's, so they are refused rather than stored.
"""

from __future__ import annotations

import unicodedata

# Unicode categories of characters that print nothing of their own: controls, formats
# (U+202E RLO, U+200B …), line and paragraph separators, surrogates, private use.
_UNSEEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def plain(text: str, what: str, allow: str = "") -> str:
    """`text` without surrounding blanks; ValueError naming `what` if it is blank or holds
    a character of _UNSEEN (other than those in `allow`)."""
    for ch in text:
        if unicodedata.category(ch) in _UNSEEN and ch not in allow:
            raise ValueError(f"{what} holds the invisible or control character U+{ord(ch):04X}")
    text = text.strip()
    if not text:
        raise ValueError(f"{what} is blank")
    return text
