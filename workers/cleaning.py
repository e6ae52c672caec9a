"""Text cleaning for preparation: mojibake repair, Unicode normalisation, control characters, whitespace.

``text_clean(text, ...)`` cleans one string; ``row_clean(row, ...)`` every string of a row but its
roles and ids. Mojibake ("doesnâ€™t" for "doesn't") is repaired by ftfy with only its encoding fixes
turned on: its other fixes (curly quotes, ligatures, full-width letters) change text that was not broken.
"""

import re
import unicodedata

UNICODE_FORMS = ("nfc", "nfkc")
_KEEP_KEYS = ("role", "tool_call_id", "source", "name", "id", "type", "arguments", "tools")  # not prose
# C0/C1 controls and DEL, but not tab, line feed or carriage return (whitespace handles those)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace but a line break, NBSP and friends included
_BLANK_LINES = re.compile(r"\n{3,}")


def _mojibake_fix(text: str) -> str:
    import ftfy

    config = ftfy.TextFixerConfig(unescape_html=False, remove_terminal_escapes=False, fix_latin_ligatures=False,
                                  fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
                                  remove_control_chars=False, normalization=None, explain=False)
    return ftfy.fix_text(text, config)


def text_clean(text: str, *, unicode: str | None = "nfc", control_chars: bool = True, whitespace: bool = True,
               mojibake: bool = True) -> str:
    """``text`` cleaned, in this order: mojibake repaired; normalised to ``unicode`` (nfc|nfkc|None);
    control characters removed (tab and line breaks stay); whitespace normalised (CRLF to LF, runs
    of spaces to one, no spaces at line ends, at most one blank line, no leading/trailing space)."""
    if mojibake and not text.isascii():
        text = _mojibake_fix(text)
    if unicode:
        text = unicodedata.normalize(unicode.upper(), text)
    if control_chars:
        text = _CONTROL.sub("", text)
    if whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_LINES.sub("\n\n", text).strip()
    return text


def row_clean(row: dict, **options) -> dict:
    """Every string of ``row`` cleaned with ``text_clean(**options)``; roles, ids, sources and tool calls kept."""

    def walk(value):
        if isinstance(value, str):
            return text_clean(value, **options)
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: item if key in _KEEP_KEYS else walk(item) for key, item in value.items()}
        return value

    return walk(row)
