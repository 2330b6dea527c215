"""Write the sample corpora shipped in `qarac/assets/data/`.

The real QARAC run trains on WikiQA, the Avicenna syllogisms and SNLI; those
cannot ship in the repo, so this script writes small stand-ins of our own in the
same CSV layouts, big enough for a smoke run. Every sentence comes from a
template filled from the hand-written vocabularies below, drawn with a fixed
seed, so running the script twice writes byte-identical files.

Usage:
    python scripts/make_sample_data.py [OUTPUT_DIR]
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path
from typing import Callable, Iterable, Sequence

SEED = 20240501
ROWS_PER_CORPUS = 240
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "qarac" / "assets" / "data"

PEOPLE = ("Alice", "Ben", "Clara", "David", "Emma", "Farid", "Grace", "Hugo",
          "Ines", "Jamal", "Kate", "Liam", "Maya", "Noah", "Olga", "Pedro")
CITIES = ("Paris", "Lisbon", "Cairo", "Oslo", "Lima", "Kyoto", "Dublin", "Vienna",
          "Nairobi", "Quebec")
MONTHS = ("January", "March", "April", "June", "July", "September", "October",
          "December")
WORKPLACES = ("the library", "the bakery", "the hospital", "the museum", "the harbour",
              "the post office", "the school", "the train station", "a small bookshop",
              "the town hall")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "grey", "orange")
OBJECTS = (("umbrella", "umbrellas"), ("bicycle", "bicycles"), ("kettle", "kettles"),
           ("lantern", "lanterns"), ("notebook", "notebooks"), ("violin", "violins"),
           ("scarf", "scarves"), ("backpack", "backpacks"))
NUMBERS = ("two", "three", "four", "five", "six", "seven")
# (animal plural, what it eats, where it lives): facts kept true on purpose.
ANIMAL_FACTS = (("rabbits", "carrots and grass", "burrows in fields"),
                ("owls", "mice and insects", "old trees"),
                ("bees", "nectar and pollen", "hives"),
                ("foxes", "berries and small animals", "dens in the forest"),
                ("dolphins", "fish and squid", "warm seas"),
                ("horses", "hay and oats", "stables and meadows"),
                ("frogs", "flies and worms", "ponds"),
                ("sparrows", "seeds and crumbs", "hedges and rooftops"))
FOODS = ("soup", "bread", "rice", "apples", "cheese", "pasta", "oranges", "pancakes")

# Syllogism terms, by domain, so that the premises read as plain English.
# Minor terms (plural noun phrases), middle terms (singular, plural), major
# predicates (plural affirmative, plural negative, singular affirmative,
# singular negative).
PEOPLE_GROUPS = ("the members of the chess club", "the guests at the wedding",
                 "the people on the night train", "the neighbours of Alice",
                 "the volunteers at the fair", "the runners in the race",
                 "the singers in the choir", "the passengers on the ferry",
                 "the cousins of David", "the new tenants")
PROFESSIONS = (("teacher", "teachers"), ("painter", "painters"), ("sailor", "sailors"),
               ("musician", "musicians"), ("farmer", "farmers"), ("doctor", "doctors"),
               ("baker", "bakers"), ("poet", "poets"), ("pilot", "pilots"),
               ("gardener", "gardeners"))
PEOPLE_PREDICATES = (("are patient", "are not patient", "is patient", "is not patient"),
                     ("are curious", "are not curious", "is curious", "is not curious"),
                     ("are early risers", "are not early risers", "is an early riser",
                      "is not an early riser"),
                     ("can swim", "cannot swim", "can swim", "cannot swim"),
                     ("like tea", "do not like tea", "likes tea", "does not like tea"),
                     ("own a dog", "do not own a dog", "owns a dog", "does not own a dog"),
                     ("are careful", "are not careful", "is careful", "is not careful"),
                     ("speak French", "do not speak French", "speaks French",
                      "does not speak French"))
ANIMAL_GROUPS = ("the foxes in the wood", "the young owls", "the horses on the farm",
                 "the dogs in the park", "the cats next door", "the frogs in the pond",
                 "the rabbits in the garden", "the birds on the roof")
ANIMAL_CLASSES = (("mammal", "mammals"), ("night hunter", "night hunters"),
                  ("pet", "pets"), ("grazer", "grazers"), ("climber", "climbers"),
                  ("swimmer", "swimmers"))
ANIMAL_PREDICATES = (("are warm-blooded", "are not warm-blooded", "is warm-blooded",
                      "is not warm-blooded"),
                     ("sleep during the day", "do not sleep during the day",
                      "sleeps during the day", "does not sleep during the day"),
                     ("have sharp teeth", "do not have sharp teeth", "has sharp teeth",
                      "does not have sharp teeth"),
                     ("are afraid of thunder", "are not afraid of thunder",
                      "is afraid of thunder", "is not afraid of thunder"),
                     ("need fresh water", "do not need fresh water", "needs fresh water",
                      "does not need fresh water"))
ANIMAL_NAMES = ("Rex", "Luna", "Biscuit", "Pepper", "Shadow", "Daisy")

# Scenes for the consistency corpus: (specific activity, more general activity,
# an activity that cannot happen at the same time).
ACTIVITIES = (("playing the violin", "making music", "sleeping"),
              ("riding a bicycle", "travelling", "sitting on a sofa"),
              ("painting a fence", "working", "swimming"),
              ("reading a newspaper", "reading", "running a race"),
              ("baking bread", "cooking", "climbing a mountain"),
              ("walking a dog", "walking", "driving a bus"),
              ("writing a letter", "writing", "dancing"),
              ("feeding the ducks", "feeding animals", "taking a nap"))
# (place phrase, more general place phrase, a place it rules out)
SCENE_PLACES = (("in the park", "outdoors", "in a dark cellar"),
                ("on the beach", "outside", "in an office"),
                ("in the kitchen", "indoors", "on a boat at sea"),
                ("by the river", "near water", "in a desert"),
                ("in the garden", "outside", "on a crowded bus"),
                ("in the library", "in a building", "on a mountain top"))
# Extra information a first statement says nothing about (neutral pairs).
NEUTRAL_FACTS = ("{p} is waiting for {q}.", "{p} is very happy today.",
                 "{p} is doing this for the first time.", "{p} has a sister named {q}.",
                 "{p} is wearing a {c} scarf.", "{p} will leave in an hour.",
                 "{p} is tired after a long week.", "{p} wants to impress {q}.")


def capitalise(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower the rest)."""
    return text[:1].upper() + text[1:]


def article(noun: str) -> str:
    """'a' or 'an' for a singular noun phrase."""
    return "an" if noun[0] in "aeiou" else "a"


# --- question answering -------------------------------------------------------

def qa_work(rng: random.Random) -> tuple[str, str]:
    person, place = rng.choice(PEOPLE), rng.choice(WORKPLACES)
    return f"Where does {person} work?", f"{person} works at {place}."


def qa_colour(rng: random.Random) -> tuple[str, str]:
    person, (thing, _), colour = rng.choice(PEOPLE), rng.choice(OBJECTS), rng.choice(COLOURS)
    return f"What colour is {person}'s {thing}?", f"{person}'s {thing} is {colour}."


def qa_visit(rng: random.Random) -> tuple[str, str]:
    person, city, month = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(MONTHS)
    return f"When did {person} visit {city}?", f"{person} visited {city} in {month}."


def qa_lend(rng: random.Random) -> tuple[str, str]:
    lender, borrower = rng.sample(PEOPLE, 2)
    thing, _ = rng.choice(OBJECTS)
    return (f"Who lent {borrower} {article(thing)} {thing}?",
            f"{lender} lent {borrower} {article(thing)} {thing}.")


def qa_count(rng: random.Random) -> tuple[str, str]:
    person, (_, things), number = rng.choice(PEOPLE), rng.choice(OBJECTS), rng.choice(NUMBERS)
    return f"How many {things} does {person} own?", f"{person} owns {number} {things}."


def qa_animal(rng: random.Random) -> tuple[str, str]:
    animals, food, home = rng.choice(ANIMAL_FACTS)
    if rng.random() < 0.5:
        return f"What do {animals} eat?", f"{capitalise(animals)} eat {food}."
    return f"Where do {animals} live?", f"{capitalise(animals)} live in {home}."


def qa_lunch(rng: random.Random) -> tuple[str, str]:
    person, food, city = rng.choice(PEOPLE), rng.choice(FOODS), rng.choice(CITIES)
    return (f"What did {person} eat for lunch in {city}?",
            f"{person} ate {food} for lunch in {city}.")


QA_TEMPLATES = (qa_work, qa_colour, qa_visit, qa_lend, qa_count, qa_animal, qa_lunch)


# --- reasoning: valid syllogisms -------------------------------------------------

def pick_terms(rng: random.Random) -> tuple[str, tuple[str, str], tuple[str, ...], str]:
    """Minor term, middle term, major predicate and a named individual, one domain."""
    if rng.random() < 0.6:
        return (rng.choice(PEOPLE_GROUPS), rng.choice(PROFESSIONS),
                rng.choice(PEOPLE_PREDICATES), rng.choice(PEOPLE))
    return (rng.choice(ANIMAL_GROUPS), rng.choice(ANIMAL_CLASSES),
            rng.choice(ANIMAL_PREDICATES), rng.choice(ANIMAL_NAMES))


def syllogism(rng: random.Random) -> tuple[str, str, str]:
    """One valid syllogism in a randomly chosen mood (Barbara, Celarent, Darii,
    Ferio, or the singular affirmative and negative forms)."""
    minor, (middle_one, middle), (pos, neg, pos_one, neg_one), name = pick_terms(rng)
    mood = rng.randrange(6)
    if mood == 0:  # Barbara
        return (f"All {minor} are {middle}.", f"All {middle} {pos}.", f"All {minor} {pos}.")
    if mood == 1:  # Celarent
        return (f"No {middle} {pos}.", f"All {minor} are {middle}.", f"None of {minor} {pos}.")
    if mood == 2:  # Darii
        return (f"All {middle} {pos}.", f"Some of {minor} are {middle}.",
                f"Some of {minor} {pos}.")
    if mood == 3:  # Ferio
        return (f"No {middle} {pos}.", f"Some of {minor} are {middle}.",
                f"Some of {minor} {neg}.")
    if mood == 4:  # singular affirmative
        return (f"{name} is {article(middle_one)} {middle_one}.", f"All {middle} {pos}.",
                f"{name} {pos_one}.")
    return (f"{name} is {article(middle_one)} {middle_one}.", f"No {middle} {pos}.",
            f"{name} {neg_one}.")


# --- consistency -----------------------------------------------------------------

def scene(rng: random.Random) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    person, other = rng.sample(PEOPLE, 2)
    return person, rng.choice(ACTIVITIES), rng.choice(SCENE_PLACES), other


def entailed_pair(rng: random.Random) -> tuple[str, str, int]:
    person, (act, general, _), (place, general_place, _), _ = scene(rng)
    second = rng.choice((f"{person} is {general} {general_place}.",
                         f"Someone is {act} {place}.",
                         f"{person} is {general}."))
    return f"{person} is {act} {place}.", second, 1


def neutral_pair(rng: random.Random) -> tuple[str, str, int]:
    person, (act, _, _), (place, _, _), other = scene(rng)
    fact = rng.choice(NEUTRAL_FACTS).format(p=person, q=other, c=rng.choice(COLOURS))
    return f"{person} is {act} {place}.", fact, 0


def contradicting_pair(rng: random.Random) -> tuple[str, str, int]:
    person, (act, general, clash), (place, _, elsewhere), _ = scene(rng)
    second = rng.choice((f"{person} is {clash} {place}.",
                         f"{person} is {act} {elsewhere}.",
                         f"Nobody is {general} {place}."))
    return f"{person} is {act} {place}.", second, -1


CONSISTENCY_TEMPLATES = (entailed_pair, neutral_pair, contradicting_pair)


# --- assembly --------------------------------------------------------------------

def unique_rows(draw: Callable[[random.Random], tuple], rng: random.Random,
                count: int) -> list[tuple]:
    """Draw rows until `count` distinct ones are collected, in draw order."""
    seen: set[tuple] = set()
    rows: list[tuple] = []
    while len(rows) < count:
        row = draw(rng)
        if row not in seen:
            seen.add(row)
            rows.append(row)
    return rows


def round_robin(templates: Sequence[Callable[[random.Random], tuple]]
                ) -> Callable[[random.Random], tuple]:
    """A drawer that cycles through the templates so every shape is represented."""
    state = {"next": 0}

    def draw(rng: random.Random) -> tuple:
        template = templates[state["next"] % len(templates)]
        state["next"] += 1
        return template(rng)

    return draw


def make_corpora(seed: int = SEED,
                 rows: int = ROWS_PER_CORPUS) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    """All four corpora: name -> (header, rows)."""
    rng = random.Random(seed)
    qa = unique_rows(round_robin(QA_TEMPLATES), rng, rows)
    reasoning = unique_rows(syllogism, rng, rows)
    consistency = unique_rows(round_robin(CONSISTENCY_TEMPLATES), rng, rows)
    sentences = [s for row in qa for s in row]
    sentences += [s for row in reasoning for s in row]
    sentences += [s for row in consistency for s in row[:2]]
    # The original all_text is the union of the other corpora's sentences:
    # deduplicated, first occurrence kept so the order is deterministic.
    all_text = [(s,) for s in dict.fromkeys(sentences)]
    return {
        "all_text": (("all_text",), all_text),
        "question_answering": (("question", "answer"), qa),
        "reasoning": (("proposition0", "proposition1", "conclusion"), reasoning),
        "consistency": (("statement0", "statement1", "consistency"), consistency),
    }


def write_csv(path: Path, header: Iterable[str], rows: Iterable[tuple]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, (header, rows) in make_corpora().items():
        write_csv(args.output / f"{name}.csv", header, rows)
        print(f"{name}.csv: {len(rows)} rows")


if __name__ == "__main__":
    main()
