"""Token-aware chunking of long documents for pretraining-style (text) data.

``text_chunks(text, count, max_tokens=..., overlap_tokens=...)`` cuts a document into pieces of at
most ``max_tokens`` tokens as ``count`` (the base model's tokenizer) sees them, each piece ending on
a sentence boundary, and each piece after the first starting with the last sentences of the one
before, up to ``overlap_tokens`` of them. A piece is a slice of the document, so nothing is rewritten;
a sentence longer than ``max_tokens`` is cut between words (and a word longer than that, between
characters), the only places a piece does not end on a sentence boundary.
"""

import re
from collections.abc import Callable

# a sentence ends at . ! ? … (with closing quotes or brackets) before whitespace, after 。！？, or at a line break
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+|[。！？]+\s*|\n\s*")
_WORD = re.compile(r"\S+\s*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, its trailing whitespace included; they cover the text."""
    spans, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if match.end() > start:
            spans.append((start, match.end()))
            start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _units(text: str, count: Callable[[str], int], max_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of the pieces a chunk is made of: sentences, or parts of one too long."""
    units = []
    for start, end in sentence_spans(text):
        tokens = count(text[start:end])
        if tokens <= max_tokens:
            units.append((start, end, tokens))
            continue
        for match in _WORD.finditer(text, start, end):
            word_start, word_end = match.span()
            tokens = count(text[word_start:word_end])
            if tokens <= max_tokens:
                units.append((word_start, word_end, tokens))
                continue
            while word_start < word_end:  # a "word" longer than a chunk: as many characters as fit
                cut = word_start + 1
                while cut < word_end and count(text[word_start:cut + 1]) <= max_tokens:
                    cut += 1
                units.append((word_start, cut, count(text[word_start:cut])))
                word_start = cut
    return units


def text_chunks(text: str, count: Callable[[str], int], *, max_tokens: int, overlap_tokens: int = 0) -> list[str]:
    """``text`` in chunks of at most ``max_tokens`` tokens (``count`` counts them), on sentence
    boundaries, consecutive chunks sharing up to ``overlap_tokens`` tokens of whole sentences.
    A text that fits is one chunk, itself (stripped); an empty text has none."""
    if not text.strip():
        return []
    if count(text) <= max_tokens:
        return [text.strip()]
    units = _units(text, count, max_tokens)
    chunks, first = [], 0
    while first < len(units):
        last, total = first, units[first][2]
        while last + 1 < len(units) and total + units[last + 1][2] <= max_tokens:
            last += 1
            total += units[last][2]
        # tokens of a joined slice can differ from the sum of its parts' (merges across the seam): check it
        while last > first and count(text[units[first][0]:units[last][1]]) > max_tokens:
            last -= 1
        piece = text[units[first][0]:units[last][1]].strip()
        if piece:
            chunks.append(piece)
        if last + 1 >= len(units):
            break
        following, shared = last + 1, 0
        while following - 1 > first and shared + units[following - 1][2] <= overlap_tokens:
            following -= 1
            shared += units[following][2]
        first = following
    return chunks
