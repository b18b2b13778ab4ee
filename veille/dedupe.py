"""Dedupe stage: the identity of an article (canonical URL) and near-duplicate detection (SimHash).

Hands on a canonical URL per entry and a 64-bit SimHash per text; the store groups articles whose
hashes are within `NEAR_DUPLICATE_BITS` bits into one cluster (a story), comparing each new hash with
every stored one (veille/store/clusters.py: one vectorised XOR and popcount).

Threshold, measured with bench/dedupe.py: 12 invented ~200-word dispatches (6 topics x 2 different
articles), 84 lightly edited copies (byline, sentence added or removed, subscription boilerplate, words
changed, shortened cut), and 6,334 pairs of different articles (384 on the same topic; the developer
article set joins as unrelated real texts when present). SimHash over word 2-shingles:

    threshold   recall   false pairs   P(false) per unrelated pair (binomial, p = 0.49 per bit)
        3        0.155       0           7e-15    (the first design: 4 bands of 16 bits)
        6        0.548       0           1e-11
        8        0.762       0           7e-10    <- chosen
       10        0.845       0           2e-8
       12        0.929       0           5e-7

Different articles never came closer than 17 bits (two different dispatches carrying the same
site boilerplate) or 21 bits on the same topic; their mean is 31. Short texts make SimHash noisy
(a 15 % edit moves 6-10 bits), so 3 bits missed most copies; above 8 bits the false-merge tail
grows ~30x per 2 bits, and a false merge hides a story from members whereas a missed one only
shows it twice. 2-shingles beat 3-shingles (recall 0.65 at 8 bits) at the same separation.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# Query parameters that only track the reader: dropped from canonical URLs. Only names that never
# identify content (an `id`-like parameter dropped here would merge every article of a CMS into one).
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid", "mc_cid", "mc_eid",
    "xtor", "xts", "xtref", "_hsenc", "_hsmi", "mkt_tok", "ref_src", "ncid", "sr_share", "cmpid", "oly_anon_id",
    "oly_enc_id", "vero_id", "wt.mc_id", "wt_mc_id", "spm", "_ga", "_gl", "ito", "ns_campaign", "ns_mchannel",
    "ns_source", "ns_linkname", "ns_fee", "utm", "s_cid", "ocid", "cmp", "at_xtor",
})
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "matomo_", "hsa_", "at_")

NEAR_DUPLICATE_BITS = 8
"""Two texts whose SimHashes differ by at most this many bits are the same story (see the table above)."""


# ==================================================================================================
# Canonical URLs

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _normalise_escapes(text: str) -> str:
    """RFC 3986 6.2.2: upper-case percent-escapes, decode the ones that encode unreserved characters."""
    def repl(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()

    return _PERCENT.sub(repl, text)


def _remove_dot_segments(path: str) -> str:
    if "/." not in path and not path.startswith("."):
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def canonical_url(url: str) -> str:
    """Normalise a URL so that the same page reached by different links has one identity.

    Only normalisations that cannot merge two different pages: lower-case scheme and host (IDNA for
    non-ASCII hosts), no default port, percent-escapes normalised (non-ASCII encoded as UTF-8), dot segments resolved, no fragment
    (except `#!` and `#/` routes, which carry the page's identity), no tracking parameters, remaining
    parameters sorted, empty path as `/`. Path case, trailing slashes and `index.html` are kept.
    Idempotent, and never raises on a string.
    """
    try:
        return _canonical(url)
    except (ValueError, UnicodeError):
        return url.strip()


@lru_cache(maxsize=4096)
def _canonical(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port
    if not host or scheme not in ("http", "https"):
        return url
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # one spelling per host: café.fr -> xn--caf-dma.fr
        except UnicodeError:
            pass
    if ":" in host:
        host = f"[{host}]"
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    if parts.username is not None:
        host = f"{parts.username}{':' + parts.password if parts.password else ''}@{host}"
    path = _remove_dot_segments(_normalise_escapes(quote(parts.path, safe=_PATH_SAFE))) or "/"
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    ]
    query.sort()
    fragment = parts.fragment if parts.fragment.startswith(("!", "/")) else ""
    return urlunsplit((scheme, host, path, urlencode(query), quote(fragment, safe=_PATH_SAFE + "?#")))


# ==================================================================================================
# SimHash

_WORD = re.compile(r"\w+", re.UNICODE)
_MASK64 = (1 << 64) - 1
SHINGLE = 2
"""Words per feature: 2-shingles keep copies closer than 3-shingles on short texts (bench/dedupe.py)."""


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return words
    return [" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)]


@lru_cache(maxsize=65536)
def _feature_hash(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")


def simhash(text: str, min_words: int = 40) -> int:
    """64-bit SimHash of word 2-shingles, as a signed integer (SQLite's INTEGER); 0 for short texts.

    Short texts (briefs, teasers) give unstable hashes, so they are not clustered at all; 0 is never
    returned for a long text.
    """
    features = _features(text)
    if len(features) < min_words:
        return 0
    # 64 bit counters in parallel: planes[p] holds bit p of every counter (a ripple-carry adder on
    # whole words), ~30x faster than counting bit by bit in Python.
    planes: list[int] = []
    for feature in features:
        carry = _feature_hash(feature)
        for p, plane in enumerate(planes):
            planes[p] = plane ^ carry
            carry &= plane
            if not carry:
                break
        else:
            if carry:
                planes.append(carry)
    half = len(features) / 2
    value = 0
    for bit in range(64):
        if sum(((plane >> bit) & 1) << p for p, plane in enumerate(planes)) > half:
            value |= 1 << bit
    return value - (1 << 64) if value >= (1 << 63) else value or 1


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & _MASK64).bit_count()
