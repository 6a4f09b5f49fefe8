"""Deterministic real English text, with no network and no data files.

The pool is made of the Zen of Python (``this.s``, rot13-decoded) and the docstrings of a fixed
list of standard-library modules (the module docstring plus those of its public functions and
classes), split into sentences and filtered to printable ASCII prose of reasonable length.

Every item is assigned to exactly one split, ``"calib"`` or ``"eval"``, by a hash of its own
text, so calibration and evaluation never share a sentence (or, for :func:`text_lines`, a line).
Results are deterministic for a given Python version (docstrings can change between CPython
minor versions).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib
import inspect
import io
import random
import re
import string
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Literal

Split = Literal["calib", "eval"]

# Fixed, ordered list: changing it changes every sample.
STDLIB_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "inspect",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mimetypes",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shlex",
    "shutil",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "tokenize",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "warnings",
    "wave",
    "zipfile",
)

MIN_SENTENCE_CHARS = 24
MAX_SENTENCE_CHARS = 160

# Characters allowed in OCR lines: ASCII letters, digits, space and basic punctuation.
LINE_CHARS = frozenset(string.ascii_letters + string.digits + " .,;:'!?-()/")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_CHARS = frozenset('_{}[]<>=\\|@#$%^*~`"')
_PRINTABLE = frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c")


def zen_of_python() -> str:
    """The Zen of Python, decoded from ``this.s`` without printing it."""
    with contextlib.redirect_stdout(io.StringIO()):
        this = importlib.import_module("this")
    return codecs.decode(this.s, "rot13")


def _module_docstrings(module_name: str) -> Iterator[str]:
    module = importlib.import_module(module_name)
    if module.__doc__:
        yield module.__doc__
    for name in sorted(getattr(module, "__all__", None) or dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        doc = inspect.getdoc(obj)
        if doc:
            yield doc


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences on ``.``/``!``/``?`` followed by an upper-case word."""
    flat = " ".join(text.split())
    return [s.strip() for s in _SENTENCE_END.split(flat) if s.strip()]


def is_clean_sentence(sentence: str) -> bool:
    """Printable ASCII prose of reasonable length, without code-like characters."""
    return (
        MIN_SENTENCE_CHARS <= len(sentence) <= MAX_SENTENCE_CHARS
        and sentence[0].isupper()
        and sentence[-1] in ".!?"
        and set(sentence) <= _PRINTABLE
        and not (set(sentence) & _CODE_CHARS)
        and "..." not in sentence
        and ":" not in sentence[-2:]
    )


def _source_texts() -> Iterator[str]:
    yield zen_of_python()
    for module_name in STDLIB_MODULES:
        yield from _module_docstrings(module_name)


def _dedupe_sorted(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items)))


@cache
def sentence_pool() -> tuple[str, ...]:
    """All clean sentences from the sources, deduplicated and sorted."""
    sentences = (s for text in _source_texts() for s in split_sentences(text))
    return _dedupe_sorted(s for s in sentences if is_clean_sentence(s))


def split_of(item: str) -> Split:
    """The split an item belongs to, from a hash of its text (about half each)."""
    digest = hashlib.sha256(item.encode("utf-8")).digest()
    return "eval" if digest[0] % 2 else "calib"


def _sample(pool: tuple[str, ...], n: int, seed: int, split: Split, what: str) -> list[str]:
    if split not in ("calib", "eval"):
        raise ValueError(f"split must be 'calib' or 'eval', got {split!r}")
    chosen = [item for item in pool if split_of(item) == split]
    if n > len(chosen):
        raise ValueError(f"asked for {n} {what}, the {split!r} split has only {len(chosen)}")
    return random.Random(seed).sample(chosen, n)


def english_sentences(n: int, seed: int = 0, *, split: Split = "calib") -> list[str]:
    """``n`` distinct English sentences from the given split, in a seed-determined order."""
    return _sample(sentence_pool(), n, seed, split, "sentences")


def wrap_words(sentence: str, min_chars: int, max_chars: int) -> list[str]:
    """Greedy word wrap into lines of at most ``max_chars``; keeps lines of ``min_chars`` or more.

    Words containing characters outside :data:`LINE_CHARS` end the current line and are dropped.
    """
    lines: list[str] = []
    current: list[str] = []

    def flush() -> None:
        line = " ".join(current)
        if min_chars <= len(line) <= max_chars:
            lines.append(line)
        current.clear()

    for word in sentence.split():
        if not set(word) <= LINE_CHARS or len(word) > max_chars:
            flush()
            continue
        if current and len(" ".join([*current, word])) > max_chars:
            flush()
        current.append(word)
    flush()
    return lines


@cache
def line_pool(min_chars: int = 8, max_chars: int = 28) -> tuple[str, ...]:
    """All distinct short lines obtained by wrapping every sentence of the pool."""
    lines = (ln for s in sentence_pool() for ln in wrap_words(s, min_chars, max_chars))
    return _dedupe_sorted(lines)


def text_lines(
    n: int,
    seed: int = 0,
    min_chars: int = 8,
    max_chars: int = 28,
    *,
    split: Split = "calib",
) -> list[str]:
    """``n`` distinct short text lines (for OCR) from the given split.

    Lines use only :data:`LINE_CHARS` (ASCII letters, digits, space, basic punctuation).
    """
    if not 1 <= min_chars <= max_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
    return _sample(line_pool(min_chars, max_chars), n, seed, split, "lines")
