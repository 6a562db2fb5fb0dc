"""How a regression item's answer is checked: a few strict, explainable matchers.

``expected`` is ``{"answer": ..., "match": ...}`` with one of:

- ``number``: the last number in the output equals the answer ("12 + 13 = 25" answers 25)
- ``word``: the answer appears as a whole word (case-insensitive)
- ``exact_word``: the answer appears as a whole word with its exact case
- ``contains``: the answer appears anywhere (case-insensitive)
- ``list``: the output, with spaces dropped, starts with the comma-separated answer
- ``only``: the output is the answer and nothing else, bar quotes, spaces and a final full stop
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def is_correct(output: str, expected: dict) -> bool:
    answer, match = str(expected["answer"]), expected["match"]
    text = output.strip()
    if match == "number":
        found = _NUMBER.findall(text.replace(",", ""))
        return bool(found) and float(found[-1]) == float(answer)
    if match == "word":
        return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE) is not None
    if match == "exact_word":
        return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text) is not None
    if match == "contains":
        return answer.lower() in text.lower()
    if match == "only":
        return text.strip(" \t\n\"'.").lower() == answer.lower()
    if match == "list":
        return text.replace(" ", "").startswith(answer.replace(" ", ""))
    raise ValueError(f"unknown match kind {match!r}")
