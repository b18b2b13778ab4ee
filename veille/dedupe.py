"""Dedupe stage: the identity of an article (canonical URL) and near-duplicate detection (SimHash).

Hands on a canonical URL per entry and a 64-bit SimHash per text; the store groups articles whose
hashes are within `NEAR_DUPLICATE_BITS` bits into one cluster (a story), comparing each new hash with
every stored one (veille/store/clusters.py: one vectorised XOR and popcount).

Threshold, measured with bench/dedupe.py: 12 invented ~200-word dispatches (6 topics x 2 different
articles), 84 lightly edited copies (byline, sentence added or removed, subscription boilerplate, words
changed, shortened cut), and 6,334 pairs of different articles (384 on the same topic; the developer
article set joins as unrelated real texts when present). SimHash over word 2-shingles. 84 copies of 12
originals are few: recall depends on the draw of the hash function as much as on the threshold, so the
bench also runs 32 other members of the family (`simhash(seed=...)`); their mean is what to expect on
real traffic, where luck averages out over thousands of texts:

    threshold   recall: this hash   mean of 32 [range]   false pairs: this hash / 32 seeds   P(false)*
        3           0.060           0.136 [0.05-0.24]            0 / 0                      2e-14  (first design)
        6           0.321           0.435 [0.29-0.55]            0 / 0                      3e-11
        8           0.500           0.645 [0.55-0.75]            0 / 0                      1e-9   <- chosen
       10           0.667           0.807 [0.69-0.90]            0 / 0                      4e-8
       12           0.857           0.908 [0.85-0.98]            0 / 2                      9e-7
    * per unrelated pair: binomial tail at p = 0.48 per bit. First design: 4 bands of 16 bits.

This hash is an unlucky draw at 8 bits (the seeds range from 0.55 to 0.75); the former blake2b hash
scored 0.76 with its draw, 0.65 averaged over 40 salts: the same method. Picking a luckier constant
would only fit these 84 copies; on other texts every member of the family averages the same. With this
hash, different articles never came closer than 17 bits (two different dispatches carrying the same site
boilerplate) or 20 on the same topic; their mean is 31. Over the 33 hash functions the closest were 11
and 12 bits, both pairs of different dispatches that carry the same byline, cut and boilerplate: the
nearest false merge seen sits 3 bits above the threshold. Short texts make SimHash noisy (a 15 % edit
moves 6-10 bits), so 3 bits missed most copies; above 8 bits the false-merge tail grows ~30x per 2 bits
and that margin shrinks, and a false merge hides a story from members whereas a missed one only shows it
twice. 2-shingles beat 3-shingles (recall 0.67 against 0.61 at 8 bits, means over 40 hash functions).
"""

from __future__ import annotations

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

SIMHASH_VERSION = 2
"""Bump whenever `simhash` gives other values: hashes from two versions cannot be compared, so an archive
whose `archive_meta.simhash_version` differs has its hashes recomputed at the next pass
(`Store.rehash_articles`). 1: blake2b per shingle; 2: numpy, polynomial word hashes (2026-11-25)."""


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


_PLAIN_URL = re.compile(r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::([0-9]{1,5}))?(/[A-Za-z0-9/:@!$&'()*+,;=._~-]*)?")
"""A URL `_canonical_general` would only rebuild: lower-case http(s) scheme and host, a port, a path of
characters it keeps as they are, no query or fragment. Most links in feeds are; for them the general
road (urlsplit, quote, parse_qsl, urlencode, urlunsplit) was a sixth of parsing a feed."""


@lru_cache(maxsize=4096)
def _canonical(url: str) -> str:
    url = url.strip()
    m = _PLAIN_URL.fullmatch(url)
    if m is not None and "/." not in url:
        scheme, host, port, path = m.groups()
        number = int(port) if port else 0
        if number <= 65535:
            if number and number != (80 if scheme == "http" else 443):
                host = f"{host}:{number}"
            return f"{scheme}://{host}{path or '/'}"
    return _canonical_general(url)


def _canonical_general(url: str) -> str:
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

# Word hash: the polynomial sum(code point * _BASE**j) mod 2**64 over the word's characters (j from 0),
# computed for every word of a text at once with prefix powers; _BASE is odd, so it has an inverse mod
# 2**64 that shifts a word's sum back to position 0 wherever the word stands in the text.
_BASE = 0x2545F4914F6CDD1D


def simhash(text: str, min_words: int = 40, *, seed: int = 0) -> int:
    """64-bit SimHash of word 2-shingles, as a signed integer (SQLite's INTEGER); 0 for short texts.

    Short texts (briefs, teasers) give unstable hashes, so they are not clustered at all; 0 is never
    returned for a long text. 2-shingles keep copies closer than 3-shingles on short texts
    (bench/dedupe.py). Only fixed arithmetic (no salted `hash()`): stored hashes are compared across
    runs and machines. Vectorised with numpy: ~40 us for 1,200 characters.

    `seed` picks another member of the same hash family, for bench/dedupe.py to measure how much its
    figures owe to the draw of one hash function; stored hashes always use 0.
    """
    from ._simhash import simhash_of  # numpy: loaded by the processes that hash, not by every command

    return simhash_of(text, min_words, seed)


def simhashes(texts: list[str], min_words: int = 40, *, seed: int = 0) -> list[int]:
    """`[simhash(t) for t in texts]`, in one vectorised pass: what a feed's articles cost to hash is
    then mostly their length, not numpy's fixed cost per call (half as much for a feed of 20 articles)."""
    from ._simhash import simhashes_of

    return simhashes_of(texts, min_words, seed)


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & _MASK64).bit_count()
