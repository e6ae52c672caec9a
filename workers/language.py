"""Which natural language a text is in: py3langid's naive Bayes model (140 languages, ISO 639-1 codes),
shipped inside the package, so detection runs offline. Loaded once per process, on first use."""

from functools import lru_cache


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_codes() -> tuple[str, ...]:
    """The codes ``language_detect`` can answer, e.g. ``("af", "am", …, "en", …)``."""
    return tuple(_identifier().labels)


def language_detect(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence 0..1) of ``text``'s language; ``("und", 0.0)`` for a text without letters."""
    if not any(c.isalpha() for c in text):
        return "und", 0.0
    code, confidence = _identifier().classify(text)
    return code, round(float(confidence), 4)
