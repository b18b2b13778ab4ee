"""Dedupe stage: the identity of an article (canonical URL) and near-duplicate detection (SimHash).

Hands on a canonical URL per entry and a 64-bit SimHash per text; the store groups articles whose
hashes are within `NEAR_DUPLICATE_BITS` bits into one cluster (a story).
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that only track the reader: dropped from canonical URLs.
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid", "mc_cid", "mc_eid",
    "xtor", "xts", "xtref", "at_medium", "at_campaign", "at_source", "at_content", "at_term", "at_format",
    "_hsenc", "_hsmi", "mkt_tok", "ref_src", "ncid", "sr_share", "cmpid", "oly_anon_id", "oly_enc_id",
    "vero_id", "wt.mc_id", "wt_mc_id", "spm", "_ga", "_gl", "ito", "ns_campaign", "ns_mchannel", "ns_source",
    "ns_linkname", "ns_fee", "actu_id", "from", "origin",
})
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "matomo_", "hsa_", "at_")

NEAR_DUPLICATE_BITS = 3
"""Two texts whose SimHashes differ by at most this many bits are the same story (see bench/dedupe)."""


def canonical_url(url: str) -> str:
    """Normalise a URL so that the same page reached by different links has one identity.

    Lower-case scheme and host, no default port, no fragment, no tracking parameters, remaining
    parameters sorted, empty path as `/`. Idempotent, and never raises on a string.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    try:
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port
    except ValueError:
        return url.strip()
    if not host:
        return url.strip()
    if ":" in host:
        host = f"[{host}]"
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}{':' + parts.password if parts.password else ''}@{host}"
    path = parts.path or "/"
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    ]
    query.sort()
    return urlunsplit((scheme, host, path, urlencode(query, doseq=True), ""))


_WORD = re.compile(r"\w+", re.UNICODE)
_MASK64 = (1 << 64) - 1


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return words
    return [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]


def simhash(text: str, min_words: int = 40) -> int:
    """64-bit SimHash of word 3-shingles, as a signed integer (SQLite's INTEGER); 0 for short texts.

    Short texts (briefs, teasers) give unstable hashes, so they are not clustered at all.
    """
    features = _features(text)
    if len(features) < min_words:
        return 0
    counts = [0] * 64
    for feature in features:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        for bit in range(64):
            counts[bit] += 1 if (h >> bit) & 1 else -1
    value = 0
    for bit in range(64):
        if counts[bit] > 0:
            value |= 1 << bit
    return value - (1 << 64) if value >= (1 << 63) else value or 1


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & _MASK64).bit_count()


def bands(h: int) -> list[int]:
    """Four 16-bit bands: hashes within 3 bits of each other share at least one band exactly."""
    u = h & _MASK64
    return [(u >> (16 * i)) & 0xFFFF for i in range(4)]
