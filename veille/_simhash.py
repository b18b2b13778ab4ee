"""The numpy kernel of `veille.dedupe.simhash` (see there for the contract and the threshold).

Apart from dedupe so that commands which never hash a text (a warm pass, `veille status`) do not pay
numpy's import.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .dedupe import _BASE, _MASK64, _WORD

_BLOCK = 1 << 15
"""Characters covered by the cached power tables; longer texts build theirs per call (memory stays bounded)."""


def _power_table(base: int, size: int) -> np.ndarray:
    powers = np.full(size, base, dtype=np.uint64)
    powers[0] = 1
    return np.multiply.accumulate(powers)  # wraps mod 2**64, identically on every machine


_POWERS = _power_table(_BASE, _BLOCK)
_INVERSES = _power_table(pow(_BASE, -1, 1 << 64), _BLOCK)
_BLOCK_POWER = int(_POWERS[-1]) * _BASE & _MASK64
_BLOCK_INVERSE = int(_INVERSES[-1]) * pow(_BASE, -1, 1 << 64) & _MASK64
_PAIR = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@cache
def _word_chars() -> np.ndarray:
    """_WORD's character class as a table over every code point, from the regex itself: same words."""
    every = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    table = np.zeros(0x110000, dtype=bool)
    for match in _WORD.finditer(every):
        table[match.start():match.end()] = True
    return table


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """_BASE**i and _BASE**-i for i < size (views of the cached tables, or built for this text)."""
    if size <= _BLOCK:
        return _POWERS[:size], _INVERSES
    blocks = -(-size // _BLOCK)
    scale = _power_table(_BLOCK_POWER, blocks), _power_table(_BLOCK_INVERSE, blocks)
    return (np.multiply.outer(scale[0], _POWERS).ravel()[:size],
            np.multiply.outer(scale[1], _INVERSES).ravel()[:size])


def _word_hashes(text: str) -> np.ndarray:
    """A stable 64-bit hash of every _WORD word of the lower-cased text, in order (no per-word Python object)."""
    chars = np.frombuffer(text.lower().encode("utf-32-le", "surrogatepass"), dtype="<u4")
    word = _word_chars().take(chars)
    start = word.copy()
    start[1:] &= ~word[:-1]
    starts = np.flatnonzero(start)
    if not len(starts):
        return np.empty(0, dtype=np.uint64)
    powers, inverses = _powers(len(chars))
    sums = np.add.reduceat(chars * word * powers, starts)
    sums *= inverses.take(starts)
    return sums


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: every input bit reaches every output bit (a SimHash needs fair bits)."""
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def simhash_of(text: str, min_words: int, seed: int) -> int:
    """`dedupe.simhash`: word hashes, their 2-shingles mixed, then the majority of every bit."""
    words = _word_hashes(text)
    if seed:
        words += np.uint64(_mix(np.array([seed & _MASK64], dtype=np.uint64))[0])
    if len(words) >= 2:
        features = words[1:] * _PAIR
        features ^= words[:-1]
        _mix(features)
    else:
        features = words
    count = len(features)
    if count < min_words:
        return 0
    bits = np.unpackbits(features.astype(">u8").view(np.uint8)).reshape(count, 64)  # column k: bit 63 - k
    # Eight 0/1 bytes per uint64 lane: summing rows adds eight bit counters at once, without carry
    # across bytes for up to 255 rows; blocks of 255 rows are then added as ordinary integers.
    lanes = np.add.reduceat(bits.view(np.uint64), np.arange(0, count, 255), axis=0)
    counts = lanes.view(np.uint8).sum(axis=0, dtype=np.int64)
    value = int.from_bytes(np.packbits(counts * 2 > count).tobytes(), "big")
    return value - (1 << 64) if value >= (1 << 63) else value or 1


