"""Text helpers shared by the report renderers."""

from __future__ import annotations

import re

# Bidi embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069): left in, one
# in a segment value or an output reverses the report's own text after it (Trojan Source).
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def show_bidi_controls(text: str) -> str:
    """`text` with each bidi control written out as `<U+202E>` (ordinary right-to-left text
    and the U+200F mark are left alone)."""
    return _BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m.group(0)):04X}>", text)
