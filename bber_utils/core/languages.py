"""Languages: the ISO 639-1 codes (two letters) a manifest row may carry.

Owns: ``ISO_639_1``, ``check_language``.
"""

from __future__ import annotations

from bber_utils.core.errors import ConfigError, did_you_mean

# Every ISO 639-1 code (ISO 639-2 registration authority's list, 183 codes plus ``sh``).
ISO_639_1: frozenset[str] = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en eo
es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg
ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn
no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg sh si sk sl sm sn so sq sr ss st su sv sw
ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())


def is_language(code: object) -> bool:
    """True for a two-letter ISO 639-1 code (lower case)."""
    return isinstance(code, str) and code in ISO_639_1


def check_language(code: object, what: str = "language") -> str:
    """``code`` lower-cased when it is an ISO 639-1 code, else ``ConfigError`` (one line, the closest code)."""
    value = str(code).strip().lower()
    if value not in ISO_639_1:
        raise ConfigError(f"{what} {code!r} is not an ISO 639-1 code (two letters such as en, ru, pl)"
                          f"{did_you_mean(value, sorted(ISO_639_1))}")
    return value
