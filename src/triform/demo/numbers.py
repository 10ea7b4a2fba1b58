"""A sequence-to-sequence task made by code: numbers spelled in English, written in German.

    342_017 -> "three hundred forty-two thousand seventeen" -> "dreihundertzweiundvierzigtausendsiebzehn"

It needs no download and a tiny encoder-decoder learns it in about a minute on a CPU, yet it is not
a copy: German writes a number as one word and says the units before the tens ("zweiundvierzig",
two-and-forty), so the model must reorder what it reads, which is what attention is for.
"""

from __future__ import annotations

import random

ENGLISH_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
ENGLISH_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
GERMAN_UNITS = (
    "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
    "sechzehn siebzehn achtzehn neunzehn"
).split()
GERMAN_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()
LIMIT = 1_000_000  # both spellings below cover 0 .. 999 999


def english(number: int) -> str:
    """American English without "and": 342017 -> 'three hundred forty-two thousand seventeen'."""
    check(number)
    if number == 0:
        return "zero"
    thousands, rest = divmod(number, 1000)
    words = [english_below_1000(thousands), "thousand"] if thousands else []
    if rest:
        words.append(english_below_1000(rest))
    return " ".join(words)


def english_below_1000(number: int) -> str:
    hundreds, rest = divmod(number, 100)
    words = [ENGLISH_UNITS[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        tens, units = divmod(rest, 10)
        words.append(ENGLISH_TENS[tens] + (f"-{ENGLISH_UNITS[units]}" if units else ""))
    elif rest:
        words.append(ENGLISH_UNITS[rest])
    return " ".join(words)


def german(number: int) -> str:
    """One word, as German writes numbers below a million: 342017 -> 'dreihundertzweiundvierzigtausendsiebzehn'."""
    check(number)
    if number == 0:
        return "null"
    thousands, rest = divmod(number, 1000)
    word = german_below_1000(thousands, final=False) + "tausend" if thousands else ""
    return word + german_below_1000(rest, final=True)


def german_below_1000(number: int, *, final: bool) -> str:
    """`final`: the number ends here, so a lone 1 is 'eins' (einhunderteins), else 'ein' (eintausend)."""
    hundreds, rest = divmod(number, 100)
    word = (german_unit(hundreds, final=False) + "hundert") if hundreds else ""
    if rest >= 20:
        tens, units = divmod(rest, 10)
        word += (german_unit(units, final=False) + "und" if units else "") + GERMAN_TENS[tens]
    elif rest:
        word += german_unit(rest, final=final)
    return word


def german_unit(number: int, *, final: bool) -> str:
    return "ein" if number == 1 and not final else GERMAN_UNITS[number]


def check(number: int) -> None:
    if not 0 <= number < LIMIT:
        raise ValueError(f"number: expected 0 <= number < {LIMIT:,}, got {number}")


def number_pairs(
    n: int, *, limit: int = LIMIT, seed: int = 0, exclude: set[int] | None = None
) -> list[tuple[int, str, str]]:
    """`n` distinct numbers below `limit` (all of them if fewer), each with its English and German
    spelling. Magnitudes are drawn log-uniformly so that short and long numbers are both common."""
    if not 1 <= limit <= LIMIT:
        raise ValueError(f"limit: expected 1 .. {LIMIT:,}, got {limit}")
    exclude = exclude or set()
    available = limit - len([x for x in exclude if x < limit])
    rng = random.Random(seed)
    chosen: list[int] = []
    seen = set(exclude)
    digits = len(str(limit - 1))
    while len(chosen) < min(n, available):
        width = rng.randint(1, digits)
        number = rng.randrange(10 ** (width - 1) if width > 1 else 0, min(10**width, limit))
        if number not in seen:
            seen.add(number)
            chosen.append(number)
    return [(number, english(number), german(number)) for number in chosen]
