"""A fixed English vocabulary and a seeded sentence generator for the mini corpus.

Sentences follow a handful of simple templates (so espeak-ng gives them natural
prosody) filled with words drawn from ~300 common words. The same seed always
gives the same sentences.
"""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

__all__ = ["WORDS", "TEMPLATES", "vocabulary", "SentenceGenerator"]

WORDS: Dict[str, Tuple[str, ...]] = {
    "det": ("the", "a", "this", "that", "every", "one", "some", "another", "my", "her", "his", "our"),
    "name": (
        "anna", "peter", "maria", "james", "sarah", "thomas", "laura", "david", "emma", "robert",
        "julia", "martin", "susan", "george", "alice", "daniel", "helen", "frank", "nora", "oscar",
    ),
    "adj": (
        "small", "large", "old", "young", "green", "red", "blue", "yellow", "black", "white",
        "happy", "quiet", "loud", "bright", "dark", "warm", "cold", "heavy", "light", "quick",
        "slow", "clever", "gentle", "strange", "famous", "tired", "busy", "empty", "broken", "golden",
        "wooden", "silver", "tiny", "huge", "round", "sharp", "soft", "careful", "friendly", "lonely",
        "hungry", "angry", "simple", "modern", "ancient", "clean", "dirty", "rich", "poor", "secret",
    ),
    "noun": (
        "house", "garden", "river", "mountain", "window", "table", "chair", "doctor", "teacher", "farmer",
        "child", "dog", "cat", "horse", "bird", "fish", "tree", "flower", "road", "bridge",
        "city", "village", "market", "school", "letter", "book", "picture", "song", "story", "machine",
        "computer", "phone", "train", "boat", "car", "bicycle", "kitchen", "door", "box", "bottle",
        "cup", "plate", "apple", "bread", "cheese", "coffee", "water", "stone", "forest", "island",
        "ocean", "cloud", "storm", "winter", "summer", "morning", "evening", "night", "friend", "neighbor",
        "soldier", "king", "queen", "student", "artist", "baker", "driver", "pilot", "sailor", "singer",
        "engine", "wheel", "lamp", "clock", "key", "bag", "coat", "hat", "shoe", "ring",
        "castle", "tower", "church", "office", "library", "station", "hospital", "museum", "factory", "farm",
        "field", "hill", "lake", "beach", "desert", "valley", "planet", "rocket", "robot", "question",
    ),
    "verb": (
        "saw", "found", "took", "made", "gave", "bought", "sold", "painted", "cleaned", "opened",
        "closed", "carried", "moved", "watched", "helped", "visited", "followed", "pushed", "pulled", "fixed",
        "built", "broke", "wanted", "liked", "loved", "hated", "remembered", "forgot", "noticed", "counted",
        "washed", "cooked", "ate", "drank", "read", "wrote", "sent", "brought", "kept", "lost",
        "caught", "dropped", "lifted", "touched", "checked", "shared", "borrowed", "hid", "chose", "described",
    ),
    "intrans": (
        "slept", "smiled", "laughed", "waited", "walked", "danced", "sang", "jumped", "arrived", "left",
        "listened", "worked", "talked", "shouted", "whispered", "cried", "stopped", "started", "returned", "fell",
    ),
    "prep": ("in", "on", "under", "near", "behind", "beside", "above", "below", "inside", "outside", "across", "around", "through", "with", "without"),
    "adv": (
        "slowly", "quickly", "quietly", "loudly", "happily", "sadly", "carefully", "suddenly", "finally", "often",
        "never", "always", "today", "yesterday", "again", "early", "late", "together", "alone", "twice",
    ),
    "num": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty", "hundred"),
    "plural": (
        "houses", "gardens", "rivers", "windows", "tables", "chairs", "doctors", "teachers", "children", "dogs",
        "cats", "horses", "birds", "trees", "flowers", "books", "pictures", "songs", "stories", "machines",
        "boats", "cars", "apples", "boxes", "bottles", "cups", "stones", "friends", "students", "clocks",
    ),
    "conj": ("and", "but", "because", "while", "when", "after", "before", "so"),
    "pron": ("he", "she", "we", "they", "you", "i"),
}

# Each template is a list of slots: a category name, or a literal word in quotes.
TEMPLATES: Tuple[Tuple[str, ...], ...] = (
    ("det", "adj", "noun", "verb", "det", "noun"),
    ("name", "verb", "det", "adj", "noun", "prep", "det", "noun"),
    ("det", "noun", "intrans", "prep", "det", "adj", "noun"),
    ("name", "intrans", "adv"),
    ("pron", "verb", "num", "adj", "plural", "adv"),
    ("det", "adj", "noun", "intrans", "conj", "pron", "verb", "det", "noun"),
    ("name", "'and'", "name", "verb", "det", "noun", "prep", "det", "noun"),
    ("'there'", "'were'", "num", "plural", "prep", "det", "adj", "noun"),
    ("adv", "det", "noun", "verb", "det", "adj", "noun"),
    ("pron", "intrans", "prep", "det", "noun", "conj", "name", "intrans"),
    ("det", "noun", "prep", "det", "noun", "verb", "name"),
    ("'where'", "'is'", "det", "adj", "noun"),
)


def vocabulary() -> List[str]:
    """All words the generator can emit, sorted.

    Returns
    -------
    list of str
        The vocabulary (a few hundred lowercase words, letters only).

    Example
    -------
    >>> v = vocabulary()
    >>> 250 < len(v) < 400
    True
    >>> all(w.isalpha() and w.islower() for w in v)
    True
    """
    words = {w for group in WORDS.values() for w in group}
    words |= {slot.strip("'") for t in TEMPLATES for slot in t if slot.startswith("'")}
    return sorted(words)


class SentenceGenerator:
    """Seeded sentences from :data:`TEMPLATES`, optionally two joined by a conjunction.

    Arguments
    ---------
    seed : int
        Random seed; the same seed gives the same sequence of sentences.
    join_prob : float
        Probability of joining two short templates with a conjunction (longer utterances).

    Example
    -------
    >>> g1, g2 = SentenceGenerator(7), SentenceGenerator(7)
    >>> [g1.sentence() for _ in range(3)] == [g2.sentence() for _ in range(3)]
    True
    >>> set(SentenceGenerator(0).sentence().split()) <= set(vocabulary())
    True
    """

    def __init__(self, seed: int, join_prob: float = 0.25):
        self.rng = random.Random(seed)
        self.join_prob = join_prob

    def _fill(self, template: Tuple[str, ...]) -> List[str]:
        return [s.strip("'") if s.startswith("'") else self.rng.choice(WORDS[s]) for s in template]

    def sentence(self) -> str:
        """Return the next sentence: lowercase words separated by single spaces."""
        words = self._fill(self.rng.choice(TEMPLATES))
        if len(words) <= 6 and self.rng.random() < self.join_prob:
            words += [self.rng.choice(WORDS["conj"])] + self._fill(self.rng.choice(TEMPLATES))
        return " ".join(words)
