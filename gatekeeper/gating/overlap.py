"""Find texts of one collection that overlap texts of another (or of itself) without comparing all pairs.

Four methods, cheapest first; each scores a pair in [0, 1]:

- ``exact``: equal after normalisation (case, punctuation, whitespace).
- ``ngram``: any shared word n-gram (13 words by default), the rule
  lm-evaluation-harness's decontamination applies; the score is the share of
  the probe's n-grams found in that reference text. As there, a text shorter
  than n words has no n-grams and is left to the other methods.
- ``minhash``: MinHash LSH (datasketch) over word shingles proposes candidate
  pairs; a candidate whose shingle Jaccard reaches the threshold is flagged
  (estimated from the signatures, computed exactly near the threshold).
- ``fuzzy``: a rapidfuzz score on the same candidates, for a copy with
  misspelt or changed words, which keeps nearly every character but loses
  words to Jaccard.

The LSH threshold sits well below the flag thresholds: LSH only proposes
candidates, so that near copies reach the checks that score them. Fuzzy
matches are therefore found among LSH candidates only, never by comparing
all pairs. A pair is reported once, under the first method that flags it.
The MinHash seed is fixed and the output sorted, so the same data gives the
same pairs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("exact", "ngram", "minhash", "fuzzy")
SCORERS = ("ratio", "token_sort_ratio", "token_set_ratio")

# What lm-evaluation-harness deletes is string.punctuation; \W covers the same
# for any script, and "_" counts as punctuation there too.
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
    """Case-folded, punctuation deleted, whitespace collapsed: "Re-Boot  it!" -> "reboot it"."""
    return " ".join(_PUNCTUATION.sub("", unicodedata.normalize("NFKC", text).casefold()).split())


@dataclass(frozen=True)
class OverlapSettings:
    ngram_n: int = 13
    """Words per n-gram; lm-evaluation-harness uses 13."""
    shingle_words: int = 1
    """Words per MinHash shingle. Single words suit short items: moving a word
    changes nothing, changing one costs one shingle instead of up to k."""
    num_perm: int = 128
    lsh_threshold: float = 0.5
    """Estimated Jaccard at which LSH proposes a candidate (recall of the cheap stage)."""
    jaccard: float = 0.8
    """Exact shingle Jaccard at or above which a candidate is flagged ``minhash``."""
    fuzzy: float = 0.9
    """rapidfuzz score / 100 at or above which a candidate is flagged ``fuzzy``."""
    scorer: str = "token_sort_ratio"
    """rapidfuzz scorer: ``ratio``, ``token_sort_ratio`` (ignores word order) or ``token_set_ratio``."""
    seed: int = 1

    def __post_init__(self):
        if self.ngram_n < 1 or self.shingle_words < 1:
            raise ValueError(f"ngram_n and shingle_words must be >= 1, got {self.ngram_n} and {self.shingle_words}")
        if self.num_perm < 16:
            raise ValueError(f"num_perm must be >= 16, got {self.num_perm}")
        for name in ("lsh_threshold", "jaccard", "fuzzy"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within (0, 1], got {getattr(self, name)}")
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {self.scorer!r}")


@dataclass(frozen=True, order=True)
class Overlap:
    probe: int
    """Index of the probe text (e.g. an evaluation item)."""
    reference: int
    """Index of the reference text (e.g. a training row)."""
    method: str
    score: float


def shingles(words: list[str], k: int) -> set[str]:
    if len(words) <= k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _minhashes(texts: Sequence[str], settings: OverlapSettings):
    from datasketch import MinHash

    sets = [[s.encode() for s in sorted(shingles(t.split(), settings.shingle_words))] for t in texts]
    return MinHash.bulk(sets, num_perm=settings.num_perm, seed=settings.seed)


class ReferenceIndex:
    """The reference texts (say, the training data), indexed once for any number of probes."""

    def __init__(self, texts: Sequence[str], settings: OverlapSettings | None = None, *, chunk: int = 20_000):
        from datasketch import MinHashLSH

        self.settings = settings = settings or OverlapSettings()
        self.normal = [normalize(t) for t in texts]
        self._exact: dict[str, list[int]] = {}
        for row, text in enumerate(self.normal):
            if text:  # a text of punctuation alone has nothing to compare
                self._exact.setdefault(text, []).append(row)
        self._ngram_keys, self._ngram_rows = self._index_ngrams()
        # token_sort_ratio is ratio on sorted words: sorting every reference once,
        # not once per comparison, makes the fuzzy check about six times cheaper.
        self._presort = settings.scorer == "token_sort_ratio"
        self._fuzzy_texts = [self._fuzzy_form(t) for t in self.normal] if self._presort else self.normal
        self._lsh = MinHashLSH(threshold=settings.lsh_threshold, num_perm=settings.num_perm)
        # Signatures are kept as one uint32 matrix (MinHash values are below 2**32),
        # so every LSH candidate of a probe is verified in one vectorised comparison.
        self._signatures = np.zeros((len(self.normal), settings.num_perm), dtype=np.uint32)
        with self._lsh.insertion_session() as session:
            for start in range(0, len(self.normal), chunk):
                part = self.normal[start : start + chunk]
                for row, signature in enumerate(_minhashes(part, settings), start):
                    self._signatures[row] = signature.hashvalues
                    if self.normal[row]:
                        session.insert(row, signature, check_duplication=False)

    def _fuzzy_form(self, text: str) -> str:
        return " ".join(sorted(text.split())) if self._presort else text

    def _index_ngrams(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (n-gram hash, row) pairs: a hash set of every reference n-gram, 16 bytes each."""
        n = self.settings.ngram_n
        keys: list[int] = []
        rows: list[int] = []
        for row, text in enumerate(self.normal):
            found = {hash(g) for g in _ngrams(text.split(), n)}
            keys += found
            rows += [row] * len(found)
        keys_a, rows_a = np.array(keys, dtype=np.int64), np.array(rows, dtype=np.int64)
        order = np.lexsort((rows_a, keys_a))
        return keys_a[order], rows_a[order]

    def _ngram_matches(self, words: list[str], below: int) -> dict[int, float]:
        """Reference rows before ``below`` sharing an n-gram with the probe -> share of its n-grams shared."""
        n = self.settings.ngram_n
        grams = _ngrams(words, n)
        if not grams or not len(self._ngram_keys):
            return {}
        probe = np.array(sorted(hash(g) for g in grams), dtype=np.int64)
        left = np.searchsorted(self._ngram_keys, probe, "left")
        right = np.searchsorted(self._ngram_keys, probe, "right")
        proposed = {int(row) for a, b in zip(left, right) for row in self._ngram_rows[a:b] if row < below}
        matches = {}
        for row in sorted(proposed):
            # hash() may collide: the hashes propose rows, the shared n-grams decide and score
            shared = len(grams & _ngrams(self.normal[row].split(), n))
            if shared:
                matches[row] = round(shared / len(grams), 4)
        return matches

    def find(self, texts: Sequence[str]) -> list[Overlap]:
        """Every (probe, reference) pair that overlaps, sorted by probe then reference."""
        return self._find([normalize(t) for t in texts], within=False)

    def find_within(self) -> list[Overlap]:
        """Overlapping pairs among the reference texts themselves, each once: the later row is the probe."""
        return self._find(self.normal, within=True)

    def _find(self, normal: list[str], within: bool) -> list[Overlap]:
        signatures = _minhashes(normal, self.settings)
        found: list[Overlap] = []
        for probe, text in enumerate(normal):
            if not text:
                continue
            below = probe if within else len(self.normal)  # within one set, only earlier rows
            flagged = {row: ("exact", 1.0) for row in self._exact.get(text, ()) if row < below}
            for row, share in self._ngram_matches(text.split(), below).items():
                flagged.setdefault(row, ("ngram", share))
            candidates = [r for r in sorted(self._lsh.query(signatures[probe])) if r < below and r not in flagged]
            flagged.update(self._verify(text, signatures[probe].hashvalues, candidates))
            found += [Overlap(probe, row, method, score) for row, (method, score) in flagged.items()]
        return sorted(found)

    def _verify(self, text: str, signature: np.ndarray, candidates: list[int]) -> dict[int, tuple[str, float]]:
        """The LSH candidates that are near copies: by shingle Jaccard, else by fuzzy score."""
        from rapidfuzz import fuzz, process

        if not candidates:
            return {}
        settings = self.settings
        # The estimated Jaccard (share of MinHash values two signatures agree on) of
        # every candidate at once. An estimate is off by at most 0.5 / sqrt(num_perm)
        # per standard deviation: a candidate four of them below the LSH threshold
        # came from banding by chance and is dropped; the exact Jaccard is computed
        # only where the estimate is within four of the flag threshold.
        estimated = (self._signatures[candidates] == signature).mean(axis=1)
        margin = 4 * 0.5 / settings.num_perm**0.5
        keep = estimated >= settings.lsh_threshold - margin
        candidates, estimated = [r for r, k in zip(candidates, keep) if k], estimated[keep]
        scorer = fuzz.ratio if self._presort else getattr(fuzz, settings.scorer)
        scores = process.cdist([self._fuzzy_form(text)], [self._fuzzy_texts[r] for r in candidates], scorer=scorer,
                               score_cutoff=settings.fuzzy * 100)[0]
        mine = shingles(text.split(), settings.shingle_words)
        near: dict[int, tuple[str, float]] = {}
        for row, estimate, score in zip(candidates, estimated, scores):
            if estimate >= settings.jaccard - margin:
                theirs = shingles(self.normal[row].split(), settings.shingle_words)
                jaccard = len(mine & theirs) / len(mine | theirs)
                if jaccard >= settings.jaccard:
                    near[row] = ("minhash", round(jaccard, 4))
                    continue
            if score:
                near[row] = ("fuzzy", round(float(score) / 100, 4))
        return near


def find_overlaps(probes: Sequence[str], references: Sequence[str], settings: OverlapSettings | None = None) -> list[Overlap]:
    """Pairs of a probe and a reference text that overlap (probe index, reference index)."""
    return ReferenceIndex(references, settings).find(probes)


def find_duplicates(texts: Sequence[str], settings: OverlapSettings | None = None) -> list[Overlap]:
    """Pairs inside one collection; ``probe`` is always the later row."""
    return ReferenceIndex(texts, settings).find_within()


def shorten(text: str, limit: int = 80) -> str:
    """One line, at most ``limit`` characters, for evidence tables."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
