"""Language codes: the two-letter codes of ISO 639-1, which name the languages of corpus files
(``train.en``), models and commands. A code outside the table is refused where a language is
declared (``xlm prepare``) unless the user names it as allowed, and warned about where text is
only encoded, so that a typo (``train.eb``) or a file name (``train.english``) never becomes a
language silently."""

from __future__ import annotations

from collections.abc import Iterable

from xlm.errors import DataError

# ISO 639-1 (184 codes, the deprecated "bh" included as corpora still use it)
ISO_639_1 = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy
    da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu
    hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb
    lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om
    or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw
    ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """.split()
)


def is_language_code(code: str) -> bool:
    return code in ISO_639_1


def check_languages(codes: Iterable[str], allowed: Iterable[str] = (), where: str = "") -> None:
    """Refuse codes that are not ISO 639-1 and not in ``allowed``, naming them all."""
    extra = set(allowed)
    bad = sorted({c for c in codes if c not in ISO_639_1 and c not in extra})
    if bad:
        names = ", ".join(repr(c) for c in bad)
        flags = " ".join(f"--allow-lang {c}" for c in bad)
        raise DataError(
            f"{where + ': ' if where else ''}{names} {'is not an ISO 639-1 language code' if len(bad) == 1 else 'are not ISO 639-1 language codes'}"
            f" (a typo, or a file name that is not {{split}}.{{lang}}?); if meant, pass {flags}"
        )
