"""Original CoS-E-style commonsense items (Salesforce/cos_e v1.11 schema).

Three tables -- where things are found, what tools are for, how people feel -- each entry with its
answer, a one-sentence explanation and the answers that would also be defensible (excluded from
its distractors, so that exactly one choice is right). Four distractors are drawn per item with a
seeded generator. ``id`` is the MD5 of the question (the hub ids are 32 hex digits too).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

# (question, answer, explanation, also-defensible answers)
PLACES: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("Where should you keep a carton of milk so that it does not spoil?", "refrigerator",
     "milk spoils when it is warm and a refrigerator keeps food cold", ()),
    ("Where does a family usually keep its toothbrushes?", "bathroom",
     "people brush their teeth at the bathroom sink", ()),
    ("Where would someone park a car overnight at home?", "garage",
     "a garage is the part of a house built to shelter a car", ()),
    ("Where can you borrow a book for free and bring it back later?", "library",
     "a library lends books to its members at no cost", ()),
    ("Where do passengers board a plane?", "airport", "planes take off from the runways of an airport", ()),
    ("Where would a surgeon operate on a patient?", "hospital",
     "hospitals have operating rooms for surgery", ("dentist's office",)),
    ("Where would you buy a loaf of bread that was baked this morning?", "bakery",
     "a bakery bakes and sells fresh bread every day", ()),
    ("Where can visitors watch sharks swim behind thick glass?", "aquarium",
     "an aquarium keeps sea animals in large glass tanks for visitors to see", ("museum",)),
    ("Where would a farmer pick apples from rows of trees?", "orchard",
     "an orchard is a field of fruit trees", ("greenhouse", "barn")),
    ("Where would a farmer keep cows during a winter storm?", "barn",
     "a barn shelters farm animals from bad weather", ("orchard",)),
    ("Where would you go to mail a heavy package?", "post office",
     "the post office weighs and sends packages", ()),
    ("Where are fire trucks kept when there is no fire?", "fire station",
     "fire trucks wait at the fire station until they are called", ("garage",)),
    ("Where would you watch a new film on a big screen with strangers?", "movie theater",
     "a movie theater shows films on a large screen to an audience", ()),
    ("Where would thousands of fans cheer for a football team?", "stadium",
     "football games are played in stadiums with seats for many fans", ()),
    ("Where would you fill a prescription for medicine?", "pharmacy",
     "a pharmacist prepares the medicine a doctor prescribes", ("hospital",)),
    ("Where would you deposit a paycheck?", "bank", "a bank keeps money in accounts for its customers", ()),
    ("Where do drivers go when the fuel tank is nearly empty?", "gas station",
     "gas stations sell fuel for cars", ()),
    ("Where could you wash your clothes if your home has no washing machine?", "laundromat",
     "a laundromat has washing machines anyone can pay to use", ()),
    ("Where can tomato plants keep growing in winter, safe from frost?", "greenhouse",
     "a greenhouse traps warmth so that plants grow even when it is cold outside", ()),
    ("Where would an astronomer use a giant telescope?", "observatory",
     "an observatory houses large telescopes for studying the sky", ()),
    ("Where would you go to have a cavity in a tooth filled?", "dentist's office",
     "dentists fill cavities in their offices", ("hospital",)),
    ("Where would you see a dinosaur skeleton on display?", "museum",
     "natural history museums display fossil skeletons", ()),
]

# (tool, purpose, explanation, also-defensible purposes)
TOOLS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("pair of scissors", "cutting paper", "scissors have two sharp blades that cut paper", ()),
    ("broom", "sweeping the floor", "a broom's bristles push dust and dirt across the floor",
     ("cleaning carpets", "soaking up spills")),
    ("ladder", "reaching high places", "climbing the steps of a ladder lets you reach up high", ()),
    ("umbrella", "staying dry in the rain", "an umbrella blocks falling rain", ()),
    ("thermometer", "measuring temperature", "a thermometer shows how hot or cold something is", ()),
    ("kettle", "boiling water", "a kettle heats water until it boils", ()),
    ("stapler", "fastening sheets of paper together", "a stapler pushes a metal staple through paper", ()),
    ("shovel", "digging holes", "a shovel's blade scoops up soil", ()),
    ("compass", "finding direction", "a compass needle points north", ()),
    ("alarm clock", "waking up on time", "an alarm clock rings at the time you set", ()),
    ("sponge", "soaking up spills", "a sponge absorbs liquid", ("sweeping the floor", "cleaning carpets")),
    ("padlock", "locking a gate", "a padlock keeps a gate closed until it is opened with a key", ()),
    ("flashlight", "seeing in the dark", "a flashlight shines light where it is dark", ()),
    ("ruler", "measuring length", "a ruler is marked in units of length", ()),
    ("hammer", "driving nails", "a hammer's heavy head strikes nails into wood", ()),
    ("oven mitt", "holding hot pans", "an oven mitt protects the hand from heat", ()),
    ("eraser", "removing pencil marks", "an eraser rubs pencil marks off paper", ()),
    ("vacuum cleaner", "cleaning carpets", "a vacuum cleaner sucks dirt out of carpets",
     ("sweeping the floor", "soaking up spills")),
]

# (question, feeling, explanation, also-defensible feelings)
FEELINGS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("A runner wins a race she trained for all year. How does she most likely feel about her result?",
     "proud", "people feel proud when hard work leads to success", ("happy", "relieved", "surprised", "tired")),
    ("A boy trips and spills his lunch tray in front of the whole cafeteria. How does he likely feel?",
     "embarrassed", "falling in front of many people makes someone feel embarrassed",
     ("sad", "angry", "surprised", "nervous")),
    ("Sam waited all week for a class trip, and then it was cancelled. How does Sam likely feel?",
     "disappointed", "losing something you looked forward to is disappointing", ("sad", "angry", "bored", "surprised")),
    ("A hiker hears a loud growl behind a bush at night. How does the hiker most likely feel?",
     "scared", "a growl in the dark suggests danger, which frightens people", ("nervous", "surprised")),
    ("Someone stays up all night to finish a project. How will they likely feel the next morning?",
     "tired", "without sleep the body feels tired", ("proud", "relieved", "bored")),
    ("A student learns that the exam she feared was cancelled. How does she most likely feel?",
     "relieved", "when a feared event is called off, the worry goes away", ("happy", "surprised")),
    ("A child moves to a new town and has no friends there yet. How might the child feel?",
     "lonely", "having nobody to spend time with makes people feel lonely", ("sad", "nervous", "bored")),
    ("A man waits in a slow line for an hour with nothing to do. How does he likely feel?",
     "bored", "waiting with nothing to do is boring", ("tired", "angry")),
    ("Lee opens the door of his dark apartment and his friends jump out shouting 'Happy birthday!'. "
     "How does Lee feel at first?", "surprised", "an unexpected party surprises the guest",
     ("happy", "scared")),
    ("Someone keeps cutting in front of Ana in the lunch line. How does Ana likely feel?",
     "angry", "being treated unfairly on purpose makes people angry", ("sad", "surprised")),
    ("A shy student is about to give a speech to the whole school. How does he most likely feel?",
     "nervous", "speaking in front of a crowd makes shy people nervous", ("scared", "embarrassed")),
    ("A girl's pet goldfish dies. How does she most likely feel?", "sad",
     "losing a pet makes people sad", ("lonely", "disappointed")),
]


def cose_row(question: str, answer: str, explanation: str, distractors: list[str], rng: random.Random) -> dict[str, Any]:
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return {
        "id": hashlib.md5(question.encode()).hexdigest(),
        "question": question,
        "choices": choices,
        "answer": answer,
        "abstractive_explanation": explanation[0].upper() + explanation[1:] + ".",
        "extractive_explanation": explanation,
    }


def from_table(table: list[tuple[str, str, str, tuple[str, ...]]], rng: random.Random,
               template: str = "{}") -> list[dict[str, Any]]:
    pool = sorted({entry[1] for entry in table})
    rows = []
    for subject, answer, explanation, defensible in table:
        candidates = [c for c in pool if c != answer and c not in defensible]
        if template != "{}":  # the subject is a bare noun: give it its article
            subject = ("an " if subject[0] in "aeiou" else "a ") + subject
        rows.append(cose_row(template.format(subject), answer, explanation,
                             rng.sample(candidates, 4), rng))
    return rows


def cose_rows(seed: int) -> list[dict[str, Any]]:
    """All generated CoS-E items, in a seeded order."""
    rng = random.Random(seed)
    rows = (from_table(PLACES, rng) + from_table(TOOLS, rng, "What is {} mainly used for?")
            + from_table(FEELINGS, rng))
    rng.shuffle(rows)
    return rows
