"""Shortening text for people: at a sentence or a word, never in the middle of one.

Shared by the runner (exception descriptions) and the judge (messages, reports).
"""

from __future__ import annotations

#: a cut looks back this far (as a share of the limit) for a sentence end, then for a space
_SENTENCE_WINDOW, _WORD_WINDOW = 0.4, 0.25
_SENTENCE_ENDS = (". ", "; ", "? ", "! ")


def shorten(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` in at most ``limit`` characters: whole, or cut after a sentence or a word, with ``ellipsis``.

    A text with no sentence end or space near the limit (one very long token) is cut at the limit.
    """
    if limit <= 0 or len(text) <= limit:
        return text
    room = max(limit - len(ellipsis), 0)
    head = text[:room]
    sentence = max(head.rfind(mark, 0, room - 1) for mark in _SENTENCE_ENDS) + 1  # keep the mark, then a space
    if sentence > 0 and sentence >= room * (1 - _SENTENCE_WINDOW):
        return head[:sentence] + " " + ellipsis
    word = head.rfind(" ")
    if word > 0 and word >= room * (1 - _WORD_WINDOW):
        return head[:word].rstrip() + ellipsis
    return head.rstrip() + ellipsis
