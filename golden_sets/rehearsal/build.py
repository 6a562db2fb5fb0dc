"""Build the rehearsal prompt pool: ordinary requests that are not support tickets.

A fine-tune that only ever sees tickets learns to answer everything with a
ticket's JSON. Mixing a few ordinary requests into each training batch, answered
by the base model itself (self-distillation: the trainer generates the answers
at training time), teaches the adapter to leave other behaviour alone.

The families here deliberately differ from the regression set's (arithmetic,
capitals and everyday facts, past tenses, formatting, yes/no), so the
regression gate still measures behaviour the adapter was never shown.

    python golden_sets/rehearsal/build.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOPICS = [
    "the ocean", "autumn leaves", "a busy kitchen", "riding a bicycle", "public libraries", "mountain hiking",
    "a rainy afternoon", "learning a new language", "city parks", "morning coffee", "a night sky full of stars",
    "gardening", "train journeys", "a small bakery", "snowy winters", "the desert", "old bridges", "street music",
    "a quiet beach", "board games", "honeybees", "lighthouses", "handwritten letters", "a farmers market",
]
ACTIVITIES = [
    "sleeping better", "studying for an exam", "running your first race", "saving money", "writing a clear email",
    "cooking rice", "keeping houseplants alive", "giving a short speech", "packing for a trip", "learning to swim",
    "starting a journal", "cleaning a messy desk", "making new friends", "staying focused while reading",
    "taking better photos", "planning a picnic", "drinking more water", "learning to draw", "walking a dog",
    "preparing for a job interview",
]
CONCEPTS = [
    "a rainbow", "photosynthesis", "an echo", "a volcano", "a thunderstorm", "a compass", "a library card",
    "a recipe", "an orchestra", "a glacier", "a museum", "a microscope", "a calendar", "a telescope", "a dictionary",
    "a map", "a harbor", "a greenhouse", "a windmill", "an umbrella",
]
PLURALS = ["child", "mouse", "tooth", "foot", "goose", "woman", "man", "sheep", "leaf", "knife", "box", "city",
           "baby", "bus", "fish", "wolf"]
ANIMALS_LEGS = ["dog", "spider", "bird", "cat", "ant", "horse", "chicken", "cow", "snake", "duck", "insect", "octopus"]
COLORS = ["grass", "the sky on a clear day", "snow", "a ripe banana", "a strawberry", "coal", "an orange", "milk",
          "a lemon", "a tomato", "chocolate", "a carrot"]
SYNONYMS = ["happy", "big", "fast", "quiet", "smart", "angry", "tiny", "cold", "brave", "tired", "funny", "rich"]


def prompts() -> list[str]:
    out = [f"Write one sentence about {t}." for t in TOPICS]
    out += [f"Give one short tip for {a}." for a in ACTIVITIES]
    out += [f"Explain in one sentence what {c} is." for c in CONCEPTS]
    out += [f'What is the plural of "{w}"? Answer with one word.' for w in PLURALS]
    out += [f"How many legs does a {a} have? Answer with a number." for a in ANIMALS_LEGS]
    out += [f"What color is {c}? Answer with one word." for c in COLORS]
    out += [f'Give a word that means the same as "{w}".' for w in SYNONYMS]
    out += [f"Write a two-line poem about {t}." for t in TOPICS[:12]]
    out += [f"Why do people enjoy {t}? Answer in one sentence." for t in TOPICS[12:]]
    return out


def main() -> None:
    lines = [json.dumps({"id": f"rehearsal-{k:04d}", "input": p, "expected": None}) for k, p in enumerate(prompts(), start=1)]
    (HERE / "general.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} prompts")


if __name__ == "__main__":
    main()
