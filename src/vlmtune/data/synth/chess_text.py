"""Chess captions: writing them, and reading piece mentions back out of free text.

Captions list the pieces left to right as they stand in the picture: "a white rook",
"a black knight and a white pawn", "a black rook, a black bishop and a white bishop".
Neighbours that are the same piece are merged with a count word ("two white pawns and a black
king"), as a person would say it; the order of the groups is still left to right.

``parse_pieces`` scores model outputs, so it is forgiving: it reads counts ("a", "an", "one" ...
"twelve", digits, "a pair of"), singular and plural piece names in any case, and ignores words it
does not know. A colour applies to the next piece name within two unknown words ("a white wooden
rook"); a piece name with no colour of its own right after "and" or a comma (a count may come
between) takes the previous piece's colour ("a white king and queen"). A piece named without
any colour is not counted: the label needs both.
"""

from __future__ import annotations

import re
from collections import Counter

COLOURS = ("white", "black")
TYPES = ("king", "queen", "rook", "bishop", "knight", "pawn")

Piece = tuple[str, str]  # (colour, type)

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
COUNT_WORDS = {w: i for i, w in enumerate(NUMBERS)} | {"a": 1, "an": 1, "single": 1, "no": 0, "pair": 2}
PLURALS = {t + "s": t for t in TYPES}
JOINERS = {"and", "&", ","}
STOPS = {".", ";", ":", "!", "?"}  # a sentence end forgets the colour in play
MAX_GAP = 2  # unknown words allowed between a colour and its piece name


def caption_for(pieces: list[Piece]) -> str:
    """The caption of pieces given left to right; equal neighbours merge into a count."""
    groups: list[list] = []
    for piece in pieces:
        if groups and groups[-1][0] == piece:
            groups[-1][1] += 1
        else:
            groups.append([piece, 1])
    phrases = [_phrase(colour, kind, count) for (colour, kind), count in groups]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _phrase(colour: str, kind: str, count: int) -> str:
    if count == 1:
        return f"a {colour} {kind}"
    return f"{NUMBERS[count] if count < len(NUMBERS) else count} {colour} {kind}s"


def pieces_label(pieces: list[Piece]) -> str:
    """Canonical order-free label, e.g. ``black bishop;black rook;white bishop``."""
    return ";".join(sorted(f"{colour} {kind}" for colour, kind in pieces))


def parse_label(label: str) -> Counter[Piece]:
    """The multiset written by ``pieces_label``."""
    found: Counter[Piece] = Counter()
    for item in label.split(";"):
        words = item.split()
        if len(words) == 2:
            found[(words[0], words[1])] += 1
    return found


def parse_pieces(text: str) -> Counter[Piece]:
    """(colour, type) mentions with their counts in free text; unknown words are skipped."""
    found: Counter[Piece] = Counter()
    count = colour = last_colour = None
    gap, after_joiner = 0, False
    for token in re.findall(r"[a-z]+|\d+|[,&.;:!?]", text.lower()):
        kind = token if token in TYPES else PLURALS.get(token)
        if kind:
            if colour is None and after_joiner:
                colour = last_colour  # "a white king and queen"
            if colour is not None:
                n = count if count is not None else (2 if token in PLURALS else 1)  # "white pawns": 2
                found[(colour, kind)] += n
                last_colour = colour
            count, colour, gap, after_joiner = None, None, 0, False
        elif token in COLOURS:
            colour, gap = token, 0
        elif token in COUNT_WORDS or token.isdigit():
            count, colour, gap = (int(token) if token.isdigit() else COUNT_WORDS[token]), None, 0
        elif token in JOINERS:
            count, colour, gap, after_joiner = None, None, 0, True
        elif token in STOPS:
            count, colour, gap, after_joiner, last_colour = None, None, 0, False, None
        else:
            gap += 1
            if gap > MAX_GAP:
                count, colour, after_joiner = None, None, False
    return +found  # drops "no black pawns" (count 0)
