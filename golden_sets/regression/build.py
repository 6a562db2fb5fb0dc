"""Build the regression golden set: behaviour the base must keep after fine-tuning.

Writes every candidate of five families of automatically checkable items.
The set is not filtered on the base's own answers: keeping only the items the
base happens to get right selects on its noise, so any change to the model,
even the same weights computed in bfloat16 instead of float32, loses some of
them and gains none back (regression to the mean). The `regression` gate pairs
base and adapter item by item on the whole set instead, so items the adapter
breaks count against the items it fixes. Re-run after changing the candidates:

    python golden_sets/regression/build.py            # write regression.jsonl
    python golden_sets/regression/build.py --score    # and print the base's accuracy per family
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

REGULAR_VERBS = [
    "work", "play", "walk", "talk", "listen", "watch", "study", "finish", "start", "look", "want", "like",
    "jump", "cook", "clean", "open", "call", "help", "ask", "move", "live", "love", "stay", "visit", "wait",
    "answer", "travel", "dance", "paint", "climb", "laugh", "learn", "smile", "push", "pull", "close", "count",
    "carry", "try", "plan", "stop", "hope", "use", "need", "turn", "kick", "fix", "wash", "enjoy", "join",
    "borrow", "bake", "believe", "change", "check", "collect", "cross", "decide", "deliver", "describe", "dream",
    "explain", "fill", "follow", "greet", "guess", "hunt", "improve", "invite", "kiss", "knock", "land", "last",
    "mark", "miss", "name", "order", "pass", "pick", "point", "pray", "print", "rain", "remember", "rest", "return",
    "save", "share", "shout", "sign", "snow", "solve", "talk", "thank", "touch", "train", "trust", "vote", "warn",
    "wish", "worry", "yell", "answer", "agree", "arrive", "attack", "bathe", "boil", "book", "brush", "burn",
]
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "China": "Beijing",
    "Russia": "Moscow", "Egypt": "Cairo", "Canada": "Ottawa", "Greece": "Athens", "Portugal": "Lisbon",
    "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest", "Belgium": "Brussels",
    "the Netherlands": "Amsterdam", "Thailand": "Bangkok", "South Korea": "Seoul", "Argentina": "Buenos Aires",
    "Peru": "Lima", "Chile": "Santiago", "Mexico": "Mexico City", "Kenya": "Nairobi", "India": "New Delhi",
    "the United Kingdom": "London", "Cuba": "Havana", "Iran": "Tehran", "Iraq": "Baghdad", "Turkey": "Ankara",
    "Ukraine": "Kyiv", "Czechia": "Prague", "Romania": "Bucharest", "Australia": "Canberra", "Brazil": "Brasilia",
    "Switzerland": "Bern", "Vietnam": "Hanoi", "the Philippines": "Manila", "Indonesia": "Jakarta",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat", "Saudi Arabia": "Riyadh", "Iceland": "Reykjavik", "the United States": "Washington",
    "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Afghanistan": "Kabul",
    "Syria": "Damascus", "Lebanon": "Beirut", "Jordan": "Amman", "Israel": "Jerusalem", "Qatar": "Doha",
    "Kuwait": "Kuwait City", "Oman": "Muscat", "Yemen": "Sanaa", "Libya": "Tripoli", "Tunisia": "Tunis",
    "Algeria": "Algiers", "Sudan": "Khartoum", "Ghana": "Accra", "Senegal": "Dakar", "Uganda": "Kampala",
    "Tanzania": "Dodoma", "Zimbabwe": "Harare", "Zambia": "Lusaka", "Angola": "Luanda", "Malaysia": "Kuala Lumpur",
    "Singapore": "Singapore", "Mongolia": "Ulaanbaatar", "North Korea": "Pyongyang", "Taiwan": "Taipei",
    "New Zealand": "Wellington", "Fiji": "Suva", "Jamaica": "Kingston", "Haiti": "Port-au-Prince",
    "Panama": "Panama City", "Costa Rica": "San Jose", "Nicaragua": "Managua", "Honduras": "Tegucigalpa",
    "Guatemala": "Guatemala City", "Ecuador": "Quito", "Bolivia": "Sucre", "Paraguay": "Asuncion",
    "Uruguay": "Montevideo", "Serbia": "Belgrade", "Croatia": "Zagreb", "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana", "Bulgaria": "Sofia", "Albania": "Tirana", "Latvia": "Riga", "Lithuania": "Vilnius",
    "Estonia": "Tallinn", "Belarus": "Minsk", "Georgia": "Tbilisi", "Armenia": "Yerevan", "Luxembourg": "Luxembourg",
    "Malta": "Valletta", "Cyprus": "Nicosia", "Scotland": "Edinburgh", "Wales": "Cardiff", "Sri Lanka": "Colombo",
}
FACTS = [
    ("How many days are in a week?", "7"), ("How many legs does a spider have?", "8"),
    ("How many months are in a year?", "12"), ("How many hours are in a day?", "24"),
    ("How many minutes are in an hour?", "60"), ("What color is the sky on a clear day?", "blue"),
    ("What is the opposite of hot?", "cold"), ("What is the opposite of up?", "down"),
    ("What is the largest planet in our solar system?", "Jupiter"), ("What is frozen water called?", "ice"),
    ("Which animal is known as the king of the jungle?", "lion"), ("What do bees make?", "honey"),
    ("What is the chemical symbol for water?", "H2O"), ("How many sides does a triangle have?", "3"),
    ("How many sides does a square have?", "4"), ("What is the color of grass?", "green"),
    ("What is the first letter of the English alphabet?", "A"), ("Which planet do we live on?", "Earth"),
    ("What gas do humans need to breathe to live?", "oxygen"), ("What is the opposite of day?", "night"),
    ("How many wheels does a bicycle have?", "2"), ("What is the closest star to Earth?", "Sun"),
    ("Which season comes after winter?", "spring"), ("Which season comes after summer?", "autumn"),
    ("What is the opposite of big?", "small"), ("In which continent is Egypt?", "Africa"),
    ("What is the largest ocean on Earth?", "Pacific"), ("How many continents are there?", "7"),
    ("What do cows drink?", "water"), ("What is the boiling point of water in Celsius?", "100"),
]
US_CAPITALS = {
    "Texas": "Austin", "California": "Sacramento", "New York": "Albany", "Florida": "Tallahassee",
    "Illinois": "Springfield", "Ohio": "Columbus", "Georgia": "Atlanta", "Massachusetts": "Boston",
    "Arizona": "Phoenix", "Colorado": "Denver", "Tennessee": "Nashville", "Utah": "Salt Lake City",
    "Hawaii": "Honolulu", "Oregon": "Salem", "Washington": "Olympia", "Virginia": "Richmond",
    "Minnesota": "Saint Paul", "Indiana": "Indianapolis", "Oklahoma": "Oklahoma City", "Nevada": "Carson City",
    "Alaska": "Juneau", "Louisiana": "Baton Rouge", "Michigan": "Lansing", "Wisconsin": "Madison",
}
MORE_FACTS = [
    ("What color are ripe bananas?", "yellow"), ("What animal says moo?", "cow"), ("What animal barks?", "dog"),
    ("What is the opposite of left?", "right"), ("What is the opposite of open?", "closed"),
    ("What is the opposite of fast?", "slow"), ("What is the opposite of happy?", "sad"),
    ("What do we call a baby cat?", "kitten"), ("What do we call a baby dog?", "puppy"),
    ("What is the color of coal?", "black"), ("What is the color of milk?", "white"),
    ("Which organ pumps blood through the body?", "heart"), ("What is the capital city of the country Japan?", "Tokyo"),
    ("Which language is mainly spoken in Brazil?", "Portuguese"), ("Which language is mainly spoken in Mexico?", "Spanish"),
    ("Which language is mainly spoken in France?", "French"), ("Which language is mainly spoken in Germany?", "German"),
    ("How many days are in a leap year?", "366"), ("How many seconds are in a minute?", "60"),
    ("How many players are on a soccer team on the field?", "11"), ("What is the tallest animal?", "giraffe"),
    ("What is the fastest land animal?", "cheetah"), ("What is the largest mammal?", "whale"),
    ("What instrument has 88 keys?", "piano"), ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the hardest natural substance?", "diamond"), ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("In which country are the pyramids of Giza?", "Egypt"), ("What is the main ingredient of guacamole?", "avocado"),
    ("What color do you get by mixing blue and yellow?", "green"),
]
WORDS = ["apple", "river", "garden", "window", "orange", "pencil", "rocket", "silver", "yellow", "planet",
         "forest", "bridge", "castle", "dragon", "guitar", "island", "jacket", "kitten", "lemon", "marble"]
YES_NO = [
    ("Is the sun hot?", "yes"), ("Is ice cold?", "yes"), ("Is fire cold?", "no"), ("Can fish swim?", "yes"),
    ("Can a stone fly by itself?", "no"), ("Is the ocean salty?", "yes"), ("Do cats bark?", "no"),
    ("Is Paris in France?", "yes"), ("Is London in Japan?", "no"), ("Do birds have feathers?", "yes"),
    ("Is snow white?", "yes"), ("Is two larger than ten?", "no"), ("Is water wet?", "yes"),
    ("Do cars have wheels?", "yes"), ("Is the moon made of cheese?", "no"), ("Can humans breathe underwater without equipment?", "no"),
    ("Is a week seven days long?", "yes"), ("Is a triangle round?", "no"), ("Do plants need sunlight?", "yes"),
    ("Is winter usually warmer than summer?", "no"),
]


def candidates() -> list[dict]:
    rng = random.Random(20261123)
    items: list[dict] = []

    def add(family: str, prompt: str, answer: str, match: str) -> None:
        if any(item["input"] == prompt for item in items):
            return
        items.append({"family": family, "input": prompt, "expected": {"answer": answer, "match": match}})

    for verb in dict.fromkeys(REGULAR_VERBS):  # unique, in order
        past = verb[:-1] + "ied" if verb.endswith("y") and verb[-2] not in "aeiou" else (
            verb + "d" if verb.endswith("e") else (verb + verb[-1] + "ed" if verb in {"plan", "stop"} else verb + "ed"))
        add("past_tense", f"What is the past tense of the verb \"{verb}\"? Answer with one word.", past, "word")
    for country, city in CAPITALS.items():
        add("factual", f"What is the capital of {country}? Answer with the city name only.", city, "contains")
    for state, city in US_CAPITALS.items():
        add("factual", f"What is the capital of the US state of {state}? Answer with the city name only.", city, "contains")
    for question, answer in FACTS + MORE_FACTS:
        add("factual", f"{question} Answer with one word or number.", answer, "word" if not answer.isdigit() else "number")
    for _ in range(160):
        a, b = rng.randint(2, 30), rng.randint(2, 20)
        op = rng.choice(["+", "-", "*"]) if a < 13 and b < 13 else rng.choice(["+", "-"])
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        add("arithmetic", f"What is {a} {op} {b}? Answer with the number only.", str(value), "number")
    for _ in range(120):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        add("arithmetic", f"Compute {a} + {b}. Reply with just the result.", str(a + b), "number")
    for word in WORDS:
        add("formatting", f"Write the word \"{word}\" in capital letters only.", word.upper(), "exact_word")
        add("formatting", f"Repeat this word exactly and nothing else: {word}", word, "only")
    for n in range(3, 8):
        add("formatting", f"List the numbers from 1 to {n}, separated by commas.",
            ", ".join(str(k) for k in range(1, n + 1)), "list")
    for question, answer in YES_NO:
        add("instruction", f"Answer with only yes or no. {question}", answer, "word")
    return items


def write(pool: list[dict]) -> None:
    from gatekeeper._util.files import write_atomic

    records = [{"id": f"reg-{number:04d}", "input": item["input"], "expected": item["expected"] | {"family": item["family"]}}
               for number, item in enumerate(pool, start=1)]
    # atomic: an interrupted rebuild leaves the shipped set as it was
    write_atomic(HERE / "regression.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {len(pool)} items")


def score(pool: list[dict], dtype: str) -> None:
    """Print the embedded base's greedy accuracy per family, through gatekeeper's own runtime and prompts."""
    from gatekeeper.bundle.base import DEFAULT_BASE, resolve_base
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.gating.answer_checks import is_correct
    from gatekeeper.runtime.hf.runtime import HFRuntime
    from gatekeeper.runtime.requests import Generate

    runtime = HFRuntime(resolve_base(DEFAULT_BASE), None, None, device="cpu", dtype=dtype, batch_size=32)
    answers = runtime.generate("base", [Generate(messages_for(item["input"]), 24) for item in pool])
    by_family: dict[str, tuple[int, int]] = {}
    for item, answer in zip(pool, answers):
        total, good = by_family.get(item["family"], (0, 0))
        by_family[item["family"]] = (total + 1, good + is_correct(answer, item["expected"]))
    print(f"base accuracy in {dtype}:")
    for family, (total, good) in sorted(by_family.items()):
        print(f"  {family:<12} {good:>4} / {total:<4}")


def main() -> None:
    pool = candidates()
    write(pool)
    if "--score" in sys.argv[1:]:
        for dtype in ("float32", "bfloat16"):
            score(pool, dtype)


if __name__ == "__main__":
    main()
