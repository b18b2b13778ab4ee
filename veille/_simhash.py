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


def prepare() -> None:
    """Build the character table now (~30 ms) instead of at the first text (see `veille.core._init_worker`)."""
    _word_chars()


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
    return _hash_words(text.lower())[0]


def _hash_words(low: str) -> tuple[np.ndarray, np.ndarray]:
    """The word hashes of a lower-cased text, and where each word starts (character offsets)."""
    chars = np.frombuffer(low.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    word = _word_chars().take(chars)
    start = word.copy()
    start[1:] &= ~word[:-1]
    starts = np.flatnonzero(start)
    if not len(starts):
        return np.empty(0, dtype=np.uint64), starts
    powers, inverses = _powers(len(chars))
    sums = np.add.reduceat(chars * word * powers, starts)
    sums *= inverses.take(starts)
    return sums, starts


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: every input bit reaches every output bit (a SimHash needs fair bits)."""
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def _seeded(words: np.ndarray, seed: int) -> np.ndarray:
    if seed:
        words += np.uint64(_mix(np.array([seed & _MASK64], dtype=np.uint64))[0])
    return words


def simhash_of(text: str, min_words: int, seed: int) -> int:
    """`dedupe.simhash`: word hashes, their 2-shingles mixed, then the majority of every bit."""
    words = _seeded(_word_hashes(text), seed)
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
    return _signed(np.packbits(counts * 2 > count).tobytes())


def _signed(majority: bytes) -> int:
    value = int.from_bytes(majority, "big")
    return value - (1 << 64) if value >= (1 << 63) else value or 1


def simhashes_of(texts: list[str], min_words: int, seed: int) -> list[int]:
    """`simhash_of` of every text, computed as one: ~25 numpy calls for a whole feed instead of ~25 per
    text, whose fixed cost was half of hashing a feed's articles (0.78 against 0.39 ms for 20).

    The texts are lower-cased one by one (as `simhash_of` does) and joined by a newline, which is not a
    word character, so no word spans two texts; word hashes do not depend on where a word stands.
    A shingle joins two neighbouring words of the same text: those of text i are the pairs starting at
    its words but the last. Bit counts are summed per text in blocks of at most 255 rows, as in
    `simhash_of`. Texts of fewer than two words (no shingle) go through `simhash_of` itself.
    """
    out = [0] * len(texts)
    if not texts:
        return out
    lowered = [t.lower() for t in texts]
    words, word_starts = _hash_words("\n".join(lowered))
    if not len(words):
        return [simhash_of(t, min_words, seed) for t in texts] if min_words <= 0 else out
    _seeded(words, seed)
    # Each text's words: from the first word starting at or after the text's first character.
    text_starts = np.cumsum([0] + [len(t) + 1 for t in lowered[:-1]])
    bounds = np.searchsorted(word_starts, text_starts).tolist() + [len(word_starts)]
    features = words[1:] * _PAIR
    features ^= words[:-1]
    _mix(features)
    rows: list[np.ndarray] = []
    blocks: list[int] = []
    owners: list[tuple[int, int, int]] = []  # (text index, first block, shingle count)
    position = 0
    for i in range(len(texts)):
        begin, end = bounds[i], bounds[i + 1]
        count = end - begin - 1
        if count < 1:
            if end - begin >= min_words:  # reached only with min_words 0 or 1
                out[i] = simhash_of(texts[i], min_words, seed)
            continue
        if count < min_words:
            continue
        owners.append((i, len(blocks), count))
        blocks.extend(range(position, position + count, 255))
        rows.append(features[begin:end - 1])
        position += count
    if not owners:
        return out
    picked = np.concatenate(rows)
    bits = np.unpackbits(picked.astype(">u8").view(np.uint8)).reshape(len(picked), 64)
    lanes = np.add.reduceat(bits.view(np.uint64), blocks, axis=0)
    per_block = lanes.view(np.uint8).astype(np.int64)
    counts = np.add.reduceat(per_block, [b for _, b, _ in owners], axis=0)
    totals = np.array([c for _, _, c in owners], dtype=np.int64)
    majority = np.packbits(counts * 2 > totals[:, None], axis=1)
    for (i, _, _), packed in zip(owners, majority):
        out[i] = _signed(packed.tobytes())
    return out


