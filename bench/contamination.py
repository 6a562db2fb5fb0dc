"""Contamination detection at scale: 100,000 training rows against 10,000 evaluation rows.

Generates seeded support-ticket-like rows from a varied vocabulary, plants
copies of some evaluation rows in the training data (exact, re-punctuated and
re-cased, paraphrased: words swapped for synonyms, dropped or moved), times
the detector the contamination gate uses, and reports rows/s, recall on the
planted pairs, the pairs flagged that were not planted, and the time against
the one-minute target.

    python bench/contamination.py [--train N] [--eval N] [--planted N] [--seed S]

Needs no model and no trained candidate.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 60.0

SYLLABLES = ("ka lo mi ren tas vor ut pel zin dra qua fen bo sli mar tek nu gor ash vel ri pon cal sen dor "
             "bri sto hal jun wex oc yar plim thu gax eb nor fi zu kre dal").split()
# Fixed phrases stay short and every sentence carries random names and numbers,
# as real tickets do: two unrelated rows should not share a 13-word run.
OPENERS = [
    "Since this morning", "After the last update", "Every time we log in", "For the past {num} days",
    "Starting yesterday evening", "Right after the migration", "Intermittently today", "Since the weekend",
    "Whenever a customer pays", "During the nightly batch", "Ever since the password reset", "On every deploy",
]
COMPONENTS = ["checkout page", "invoice run", "dashboard", "login", "CSV export", "mail relay", "mobile app",
              "search", "footer", "public API", "report builder", "sync job", "printer queue", "upload form"]
ISSUES = [
    "returns error {code}", "is generated twice for {num} accounts", "loads in about {num} seconds",
    "logs {name} out at random", "comes out empty for {name}", "drops messages to {city}",
    "crashes on start for {name}", "shows results from the {name} account", "has a typo in the word {name}",
    "answers with status 500 in {city}", "shows numbers from {num}", "never finishes after step {num}",
    "sends codes {num} minutes late", "is stuck behind job {num}", "rejects files above {num} MB",
    "prints the wrong timezone for {city}", "fires {num} times per event", "looks blurry on {name} screens",
]
IMPACTS = [
    "and {num} orders cannot be completed", "so our {city} support line is flooded",
    "which blocks {name} in finance", "but {name} found a workaround", "although only {num} users noticed", "and the board meets on day {num}",
    "so we lose about {num} sales an hour", "which {name} calls cosmetic", "and auditor {name} is asking questions",
    "but it only affects staging {num}", "and {name} threatens to cancel", "though {name} is not blocked",
]
EXTRAS = [
    "Error code {code} shows in the log.", "Ticket reference {code}.", "Affected account: {name} in {city}.",
    "Contact {name} at extension {num}.", "It happens on build {num}.", "Browser: {name} {num}.",
    "Roughly {num} users are affected.", "First seen at {num} past nine.",
    "Customer {name} from {city} reported it.", "Priority was raised by {name}.",
]
SYNONYMS = {
    "error": "failure", "customer": "client", "users": "people", "page": "screen", "returns": "gives",
    "empty": "blank", "crashes": "dies", "stuck": "frozen", "wrong": "incorrect", "every": "each",
    "account": "profile", "today": "this day", "the": "our", "is": "seems", "and": "plus",
    "reported": "raised", "blocks": "stops", "shows": "displays", "affected": "hit", "sends": "delivers",
}


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def ticket(rng: random.Random) -> str:
    def fill(template: str) -> str:
        return template.format(code=f"E{rng.randint(1000, 99999)}", num=rng.randint(2, 9999),
                               name=word(rng).capitalize(), city=word(rng).capitalize())

    text = (f"{fill(rng.choice(OPENERS))}, the {word(rng).capitalize()} {rng.choice(COMPONENTS)} "
            f"{fill(rng.choice(ISSUES))} {fill(rng.choice(IMPACTS))}.")
    for _ in range(rng.randint(1, 3)):
        text += " " + fill(rng.choice(EXTRAS))
    return text


def repunctuate(rng: random.Random, text: str) -> str:
    words = text.replace(",", "").replace(".", "").split()
    cased = [w.upper() if rng.random() < 0.2 else w.lower() for w in words]
    return "  ".join(cased) + "!!"


def paraphrase(rng: random.Random, text: str) -> str:
    """A few words changed, one dropped, two neighbours swapped."""
    words = text.split()
    swappable = [i for i, w in enumerate(words) if w.lower().strip(",.") in SYNONYMS]
    for i in rng.sample(swappable, min(2, len(swappable))):
        words[i] = SYNONYMS[words[i].lower().strip(",.")]
    del words[rng.randrange(len(words))]
    i = rng.randrange(len(words) - 1)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


COPIERS = {
    "exact": lambda rng, text: text,
    "repunctuated": repunctuate,
    "paraphrased": paraphrase,
}


def make_data(n_train: int, n_eval: int, n_planted: int, seed: int):
    """Training rows with copies of evaluation rows planted at random places; (eval row, train row) -> kind."""
    rng = random.Random(seed)
    evaluation = [ticket(rng) for _ in range(n_eval)]
    rows: list[tuple[str, tuple[int, str] | None]] = [(ticket(rng), None) for _ in range(n_train - n_planted)]
    kinds = list(COPIERS)
    for k, source in enumerate(rng.sample(range(n_eval), n_planted)):
        kind = kinds[k % len(kinds)]
        rows.append((COPIERS[kind](rng, evaluation[source]), (source, kind)))
    rng.shuffle(rows)
    planted = {(origin[0], row): origin[1] for row, (_, origin) in enumerate(rows) if origin}
    return [text for text, _ in rows], evaluation, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=10_000)
    parser.add_argument("--planted", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from gatekeeper.gating.overlap import OverlapSettings, ReferenceIndex, shorten

    train, evaluation, planted = make_data(args.train, args.eval, args.planted, args.seed)
    settings = OverlapSettings()
    print(f"{len(train):,} training rows, {len(evaluation):,} evaluation rows, {len(planted)} planted copies")
    print(f"settings: {settings}")

    started = time.perf_counter()
    index = ReferenceIndex(train, settings)
    built = time.perf_counter()
    found = index.find(evaluation)
    elapsed = time.perf_counter() - started
    probe_s = elapsed - (built - started)

    flagged = {(o.probe, o.reference): o for o in found}
    print(f"index: {built - started:.1f} s ({len(train) / (built - started):,.0f} training rows/s)")
    print(f"probe: {probe_s:.1f} s ({len(evaluation) / probe_s:,.0f} evaluation rows/s)")
    print(f"total: {elapsed:.1f} s ({(len(train) + len(evaluation)) / elapsed:,.0f} rows/s)")
    for kind in ("exact", "repunctuated", "paraphrased"):
        pairs = [p for p, how in planted.items() if how == kind]
        hit = [flagged[p].method for p in pairs if p in flagged]
        methods = ", ".join(f"{m} {hit.count(m)}" for m in sorted(set(hit)))
        print(f"recall {kind:>12}: {len(hit)}/{len(pairs)} = {len(hit) / len(pairs):.1%} ({methods or 'none'})")
    recall = sum(p in flagged for p in planted) / len(planted)
    print(f"recall overall: {recall:.1%}")
    # Generated rows can overlap by chance (a 13-word run, or rows that differ
    # only in names and numbers): real overlaps by the rules, just not planted.
    unplanted = [o for p, o in flagged.items() if p not in planted]
    by_method = ", ".join(f"{m} {sum(o.method == m for o in unplanted)}" for m in sorted({o.method for o in unplanted}))
    print(f"flagged pairs not planted: {len(unplanted)} of {len(found)} ({by_method or 'none'})")
    for o in unplanted[:2]:
        print(f"  e.g. {o.method} {o.score}: {shorten(evaluation[o.probe], 70)!r} ~ {shorten(train[o.reference], 70)!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak memory: {peak:,.0f} MiB (data included)")
    verdict = "within" if elapsed <= TARGET_SECONDS else "OVER"
    print(f"time {elapsed:.1f} s vs target {TARGET_SECONDS:.0f} s: {verdict} target")


if __name__ == "__main__":
    main()
