"""Original ScienceQA-style items (text-only), composed from templates with a seeded generator.

Nine families: states of matter, magnets, thermal energy, kinetic energy, units of measure,
animal classes, dictionary guide words, rhymes, weather vs climate. Every answer is determined by
the template (alphabetical order and rhymes are computed), so the items are correct by
construction. Rows follow the derek-thomas/ScienceQA schema; ``answer`` indexes ``choices``.
"""

from __future__ import annotations

import random
from typing import Any

STATES: dict[str, list[str]] = {
    "solid": ["a rock", "a wooden spoon", "an ice cube", "a copper coin", "a brick", "a pencil"],
    "liquid": ["orange juice", "olive oil", "vinegar", "rainwater in a puddle", "milk", "lemonade"],
    "gas": ["the air inside a soccer ball", "the helium in a party balloon",
            "the oxygen in a diver's tank", "the air you breathe out"],
}
STATE_LECTURE = (
    "Matter is anything that has mass and takes up space. A solid has its own size and shape. "
    "A liquid has its own volume but takes the shape of its container. A gas has no shape or "
    "volume of its own: it spreads out to fill all the space it is in."
)
STATE_REASON = {
    "solid": "keeps its own shape even when you move it, so it is a solid",
    "liquid": "takes the shape of whatever container holds it but keeps its volume, so it is a liquid",
    "gas": "spreads out to fill the space it is in, so it is a gas",
}

MAGNET_LECTURE = (
    "Magnets can pull or push on each other without touching. When magnets attract, they pull "
    "together; when they repel, they push apart. Every magnet has a north pole and a south pole. "
    "Opposite poles attract each other, and like poles repel each other."
)
NAMES = ["Maya", "Tomas", "Priya", "Jonah", "Aiko", "Ravi", "Lena", "Omar"]

ENERGY_LECTURE = (
    "Every object is made of particles that are always moving. Thermal energy is the energy of "
    "this motion. For two objects made of the same material with the same mass, the hotter one "
    "has more thermal energy, because its particles move faster."
)
HEATED_OBJECTS = [("mugs of cocoa", "mug of cocoa"), ("iron pans", "iron pan"), ("bowls of soup", "bowl of soup"),
                  ("glass marbles", "glass marble"), ("bricks", "brick"), ("pots of water", "pot of water")]
KINETIC_LECTURE = (
    "An object in motion has kinetic energy. The faster an object moves, the more kinetic energy "
    "it has, as long as its mass stays the same."
)
MOVERS = [("delivery vans", "delivery van"), ("motorcycles", "motorcycle"), ("cars", "car"),
          ("buses", "bus"), ("trains", "train"), ("trucks", "truck")]

UNIT_LECTURE = (
    "Measurements are written with a number and a unit. Small lengths are measured in millimeters "
    "or centimeters, everyday lengths in meters, and long distances in kilometers. Light things "
    "are weighed in grams and heavier things in kilograms. Small volumes are measured in "
    "milliliters and larger ones in liters."
)
UNIT_ITEMS: list[tuple[str, str, int, str, list[str]]] = [
    ("length", "a new pencil", 18, "centimeters", ["kilometers", "meters"]),
    ("length", "a school bus", 12, "meters", ["millimeters", "kilometers"]),
    ("length", "a paper clip", 3, "centimeters", ["meters", "kilometers"]),
    ("length", "a bike ride across town", 9, "kilometers", ["centimeters", "millimeters"]),
    ("mass", "a bag of flour", 2, "kilograms", ["grams"]),
    ("mass", "a strawberry", 15, "grams", ["kilograms"]),
    ("mass", "an adult horse", 500, "kilograms", ["grams"]),
    ("volume", "a bathtub full of water", 200, "liters", ["milliliters"]),
    ("volume", "a cup of tea", 250, "milliliters", ["liters"]),
    ("volume", "a spoonful of medicine", 5, "milliliters", ["liters"]),
]
UNIT_SCALE: dict[str, float] = {
    "millimeters": 0.001, "centimeters": 0.01, "meters": 1.0, "kilometers": 1000.0,
    "grams": 1.0, "kilograms": 1000.0, "milliliters": 1.0, "liters": 1000.0,
}

CLASSES: dict[str, tuple[list[str], str]] = {
    "mammal": (["dolphin", "bat", "red fox", "koala", "walrus", "bison"],
               "Mammals have hair or fur and feed their young milk."),
    "bird": (["penguin", "ostrich", "bald eagle", "flamingo", "robin"],
             "Birds have feathers, two wings and a beak, and they lay eggs with shells."),
    "reptile": (["box turtle", "Komodo dragon", "rattlesnake", "gecko", "alligator"],
                "Reptiles have scaly, waterproof skin, and most lay eggs on land."),
    "amphibian": (["tree frog", "salamander", "cane toad", "newt"],
                  "Amphibians have moist skin and begin their lives in water."),
    "fish": (["salmon", "clownfish", "great white shark", "seahorse", "tuna"],
             "Fish live underwater and have fins, not limbs."),
}
CLASS_LECTURE = (
    "Scientists sort animals into groups that share traits. Mammals, birds, reptiles, amphibians "
    "and fish are five of these groups, and each has traits that set it apart."
)

GUIDE_WORDS = sorted([
    "anchor", "basket", "candle", "dragon", "engine", "forest", "garden", "harbor", "island",
    "jacket", "kitten", "ladder", "meadow", "napkin", "orbit", "pepper", "quartz", "rabbit",
    "saddle", "ticket", "umbrella", "valley", "walnut", "yellow", "zipper", "bright", "clover",
    "marble", "saffron", "timber",
])
GUIDE_LECTURE = (
    "Guide words at the top of a dictionary page show the first and last words on that page. "
    "A word appears on the page if it comes between the guide words in alphabetical order."
)

RHYMES = [["cat", "hat", "bat", "mat"], ["cake", "lake", "rake", "bake"], ["pin", "fin", "tin", "win"],
          ["rug", "bug", "mug", "hug"], ["cold", "bold", "gold", "sold"], ["ring", "sing", "king", "wing"],
          ["top", "mop", "hop", "shop"]]
RHYME_LECTURE = (
    "Rhyming words end with the same sound. For example, 'sun' and 'fun' rhyme because both "
    "end with the 'un' sound."
)

WEATHER_PASSAGES: list[tuple[str, str]] = [
    ("Heavy rain fell on the village of Alder Creek for three hours on Monday morning.", "weather"),
    ("Winters along the northern coast are usually long, dark and snowy.", "climate"),
    ("A strong wind knocked over the garden chairs at noon yesterday.", "weather"),
    ("The desert town gets very little rain in most years, and its summers are hot.", "climate"),
    ("Fog covered the harbor on Saturday until about ten o'clock.", "weather"),
    ("In this valley, spring is typically mild and wet.", "climate"),
    ("The temperature dropped below freezing last night, so the pond froze.", "weather"),
]
WEATHER_LECTURE = (
    "Weather is what the atmosphere is like at a certain place and time, and it can change "
    "quickly. Climate is the pattern of weather in a place over a long time, usually many years."
)


def row(question: str, choices: list[str], answer: int, *, hint: str = "", grade: str,
        subject: str, topic: str, category: str, skill: str, lecture: str, solution: str) -> dict[str, Any]:
    """One row in the derek-thomas/ScienceQA schema (text-only: image is null)."""
    return {"question": question, "choices": choices, "answer": answer, "hint": hint,
            "image": None, "task": "closed choice", "grade": grade, "subject": subject,
            "topic": topic, "category": category, "skill": skill, "lecture": lecture,
            "solution": solution}


def states_items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    for _ in range(count):
        target = rng.choice(sorted(STATES))
        answer = rng.choice(STATES[target])
        others = [rng.choice(STATES[s]) for s in sorted(STATES) if s != target]
        choices = [answer, *others]
        rng.shuffle(choices)
        items.append(row(f"Which of these is a {target}?", choices, choices.index(answer),
                         grade="grade2", subject="natural science", topic="physics",
                         category="States of matter", skill="Identify solids, liquids, and gases",
                         lecture=STATE_LECTURE,
                         solution=f"{answer[0].upper() + answer[1:]} {STATE_REASON[target]}."))
    return items


def magnet_items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    for _ in range(count):
        first, second = rng.choice("NS"), rng.choice("NS")
        pole = {"N": "north", "S": "south"}
        name = rng.choice(NAMES)
        hint = (f"{name} holds two bar magnets so that the {pole[first]} pole of one magnet faces "
                f"the {pole[second]} pole of the other.")
        same = first == second
        reason = (f"Like poles repel: both facing poles are {pole[first]} poles." if same else
                  "Opposite poles attract: a north pole faces a south pole.")
        items.append(row("Will these magnets attract or repel each other?", ["attract", "repel"],
                         1 if same else 0, hint=hint, grade="grade3", subject="natural science",
                         topic="physics", category="Velocity, acceleration, and forces",
                         skill="Predict magnetic forces", lecture=MAGNET_LECTURE,
                         solution=f"{reason} So the magnets will {'repel' if same else 'attract'}."))
    return items


def energy_items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    for number in range(count):
        thermal = number % 2 == 0
        plural, singular = rng.choice(HEATED_OBJECTS if thermal else MOVERS)
        low, high = sorted(rng.sample(range(10, 95, 5), 2))
        unit = "°C" if thermal else " km/h"
        choices = [f"the {singular} at {low}{unit}", f"the {singular} at {high}{unit}"]
        if rng.random() < 0.5:
            choices.reverse()
        answer = choices.index(f"the {singular} at {high}{unit}")
        if thermal:
            hint = f"Two {plural} are identical except for their temperatures: {low}°C and {high}°C."
            question, kind, lecture = "Which one has more thermal energy?", "Thermal energy", ENERGY_LECTURE
            why = "hotter, so its particles move faster and it has more thermal energy"
        else:
            hint = f"Two {plural} with the same mass travel in a straight line at {low} km/h and {high} km/h."
            question, kind, lecture = "Which one has more kinetic energy?", "Kinetic energy", KINETIC_LECTURE
            why = "faster, and with the same mass the faster object has more kinetic energy"
        items.append(row(question, choices, answer, hint=hint, grade="grade5",
                         subject="natural science", topic="physics", category=kind,
                         skill=f"Compare {kind.lower()}", lecture=lecture,
                         solution=f"The {singular} at {high}{unit} is {why}."))
    return items


def unit_items(rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for quantity, thing, number, unit, wrong in UNIT_ITEMS:
        choices = [f"{number} {unit}", *(f"{number} {w}" for w in wrong)]
        rng.shuffle(choices)
        # A wrong unit is "too big" when it is larger than the right one (same number).
        verdicts = " ".join(
            f"{number} {w} is far too {'big' if UNIT_SCALE[w] > UNIT_SCALE[unit] else 'small'}."
            for w in wrong
        )
        items.append(row(f"Select the best estimate. What is the {quantity} of {thing}?", choices,
                         choices.index(f"{number} {unit}"), grade="grade3",
                         subject="natural science", topic="units-and-measurement",
                         category="Units and measurement",
                         skill=f"Choose metric units of {quantity}", lecture=UNIT_LECTURE,
                         solution=f"The best estimate is {number} {unit}. {verdicts}"))
    return items


def class_items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    names = sorted(CLASSES)
    for number in range(count):
        target = names[number % len(names)]
        members, trait = CLASSES[target]
        answer = rng.choice(members)
        others = [rng.choice(CLASSES[name][0]) for name in rng.sample([n for n in names if n != target], 2)]
        choices = [answer, *others]
        rng.shuffle(choices)
        article = "an" if target[0] in "aeiou" else "a"
        items.append(row(f"Select the {target}.", choices, choices.index(answer), grade="grade3",
                         subject="natural science", topic="biology", category="Classification",
                         skill="Identify mammals, birds, fish, reptiles, and amphibians",
                         lecture=CLASS_LECTURE,
                         solution=f"A {answer} is {article} {target}. {trait}"))
    return items


def guide_word_items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    while len(items) < count:
        first, last = sorted(rng.sample(GUIDE_WORDS, 2))
        inside = [w for w in GUIDE_WORDS if first < w < last]
        outside = [w for w in GUIDE_WORDS if w < first or w > last]
        if not inside or not outside:
            continue
        answer, other = rng.choice(inside), rng.choice(outside)
        choices = [answer, other]
        rng.shuffle(choices)
        side = "before" if other < first else "after"
        bound = first if other < first else last
        items.append(row(f"Which word would you find on a dictionary page with the guide words "
                         f"{first} - {last}?", choices, choices.index(answer), grade="grade3",
                         subject="language science", topic="reference-skills",
                         category="Reference skills", skill="Use guide words",
                         lecture=GUIDE_LECTURE,
                         solution=(f"Put the words in alphabetical order. '{answer}' comes between "
                                   f"'{first}' and '{last}', so it is on the page. '{other}' comes "
                                   f"{side} '{bound}', so it is not.")))
    return items


def rhyme_items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    for number in range(count):
        family = RHYMES[number % len(RHYMES)]
        odd_family = rng.choice([f for f in RHYMES if f is not family])
        pair = rng.sample(family, 2)
        odd = rng.choice(odd_family)
        choices = [*pair, odd]
        rng.shuffle(choices)
        ending = family[0][1:]
        items.append(row("Which word does not rhyme?", choices, choices.index(odd), grade="grade1",
                         subject="language science", topic="phonological-awareness",
                         category="Rhyming", skill="Does the word rhyme?", lecture=RHYME_LECTURE,
                         solution=(f"The words '{pair[0]}' and '{pair[1]}' rhyme: they both end with "
                                   f"the '{ending}' sound. The word '{odd}' does not rhyme.")))
    return items


def weather_items() -> list[dict[str, Any]]:
    items = []
    for passage, kind in WEATHER_PASSAGES:
        why = ("it tells what the atmosphere is like at one place and time" if kind == "weather"
               else "it describes the usual pattern of weather in a place over many years")
        items.append(row("Does this passage describe the weather or the climate?",
                         ["weather", "climate"], 0 if kind == "weather" else 1, hint=passage,
                         grade="grade4", subject="natural science", topic="earth-science",
                         category="Weather and climate", skill="Weather and climate around the world",
                         lecture=WEATHER_LECTURE,
                         solution=f"The passage describes the {kind}, because {why}."))
    return items


def scienceqa_rows(seed: int) -> list[dict[str, Any]]:
    """All generated items, in a seeded order (callers split them into train and test)."""
    rng = random.Random(seed)
    items = (states_items(rng, 7) + magnet_items(rng, 6) + energy_items(rng, 8) + unit_items(rng)
             + class_items(rng, 8) + guide_word_items(rng, 8) + rhyme_items(rng, 7) + weather_items())
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in items:  # the templates can repeat an item; keep the first copy
        unique.setdefault((item["hint"], item["question"], tuple(sorted(item["choices"]))), item)
    items = list(unique.values())
    rng.shuffle(items)
    return items
