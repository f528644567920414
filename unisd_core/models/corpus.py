"""The fixed text the tiny models' tokenizer is trained on.

It is embedded here (not read from disk or the hub) so that the tokenizer, and hence every token
id, is a pure function of this file: the zoo's build hash covers :func:`training_corpus`. The text
imitates what the tiny models will see in this project: English prose, science and commonsense
multiple-choice items, Python code with asserts, ReAct tool-use traces, the teacher-prompt phrases
of method.md, letters A-E and digits. Byte-level BPE means text outside this corpus still encodes,
just in more tokens.

Departure from the paper: real models use tokenizers trained on trillions of tokens; these ids
only need to be stable and realistic enough to exercise the pipeline.
"""

from __future__ import annotations

PROSE = """\
The sun is a star at the centre of our solar system. Plants use sunlight, water and carbon dioxide
to make sugar and oxygen; this process is called photosynthesis. Animals breathe in oxygen and
breathe out carbon dioxide. A food chain shows how energy moves from one living thing to another.
Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees. When a liquid
turns into a gas, we say that it evaporates; when a gas turns into a liquid, it condenses.
Magnets attract objects made of iron, nickel and cobalt. Opposite poles attract each other and like
poles repel each other. Gravity is the force that pulls objects toward the centre of the Earth.
The Earth rotates on its axis once every day and travels around the sun once every year.
The moon reflects light from the sun. A solid has a definite shape and volume, a liquid has a
definite volume but takes the shape of its container, and a gas has neither.
Heat flows from a warmer object to a cooler object until both reach the same temperature.
Metals are good conductors of heat and electricity; wood, rubber and plastic are insulators.
A cell is the smallest unit of life. The nucleus controls the activities of the cell, and the cell
membrane controls what enters and leaves it. Genes are passed from parents to their offspring.
An inherited trait, such as eye colour, is determined by genes; an acquired trait, such as the
ability to ride a bicycle, is learned. Fossils tell us about plants and animals that lived long ago.
Weather describes the conditions of the atmosphere at a given place and time, while climate is the
pattern of weather over many years. Clouds form when water vapour cools and condenses.
People keep food in a refrigerator so that it stays fresh. If you want to read a book at night,
you turn on a lamp. A person who is tired usually goes to bed; a person who is hungry eats a meal.
You would find a stapler in an office, a stove in a kitchen, and a shovel in a garden shed.
Children go to school to learn; adults often go to work to earn money for their families.
When it rains, people carry an umbrella so that they do not get wet. Birds build nests in trees.
A map helps travellers find their way; a calendar helps people remember important dates.
The students measured the length of the table in centimetres and recorded the results.
Which of these is a renewable resource? Wind, sunlight and water can be used again and again,
while coal, oil and natural gas take millions of years to form and will eventually run out.
The scientist formed a hypothesis, designed an experiment, collected data and drew a conclusion.
An experiment compares a test group with a control group and changes only one variable at a time.
Energy cannot be created or destroyed; it only changes from one form to another. Kinetic energy is
the energy of motion, and potential energy is stored energy. Sound travels as a wave of vibrations.
Light travels faster than sound, which is why we see lightning before we hear thunder.
The volume of a rectangular box is its length times its width times its height. A force can change
the speed or the direction of a moving object. Friction slows things down and produces heat.
Mixtures can be separated by filtering, by evaporation, or by using a magnet.
A question asks which answer is most likely to be correct; the reason explains why.
Because the ice cube was left in the sun, it melted into a small puddle of water.
Since the glass fell on the hard floor, it broke into many sharp pieces.
Although the road was long, the runners kept a steady pace and finished the race together.
The teacher explained the lesson carefully, and then the class solved the problem on their own.
Read the question, think about each option, and choose the best answer from the choices given.
The library opens at nine in the morning and closes at six in the evening on weekdays.
A river carries water from the mountains down to the sea, shaping valleys along its path.
Volcanoes erupt when melted rock, called magma, rises through cracks in the crust of the Earth.
Earthquakes happen when large plates of rock suddenly slip past one another underground.
The heart pumps blood through arteries and veins; the lungs take in air and remove waste gases.
Bones protect the organs of the body, and muscles pull on bones so that the body can move.
Bacteria are tiny living things; some cause disease, while others help us digest our food.
A vaccine trains the immune system to recognise a germ before a person becomes sick.
Deserts receive very little rain, so the plants that live there store water in thick stems.
Rainforests are warm and wet all year and are home to more kinds of animals than any other place.
Migration is the seasonal movement of animals, such as geese flying south for the winter.
Camouflage helps an animal hide from predators by blending in with its surroundings.
Electric circuits need a closed loop; when a switch is open, the current stops flowing.
Batteries store chemical energy and release it as electrical energy when connected to a circuit.
Historians study letters, maps, coins and buildings to learn how people lived in the past.
Farmers plant seeds in spring, water the fields during summer and harvest crops in autumn.
Markets let buyers and sellers trade goods; prices rise when demand grows faster than supply.
Musicians practise scales every day, and athletes stretch before training to avoid injury.
If a friend is sad, you might listen to them, offer help, or simply stay with them for a while.
When the traffic light turns red, drivers must stop and wait until it turns green again.
A thermometer measures temperature, a ruler measures length, and a scale measures mass.
Computers follow instructions written by programmers; a program is a list of such instructions.
Engineers test bridges with heavy loads to make sure that they are strong and safe to cross.
Oceans cover most of the surface of our planet and hold almost all of its water.
Evidence supports a claim when it comes from careful observation that others can repeat.
"""

TEACHER_PHRASES = """\
This is an example for a response to the question:
Carefully study the reference solution, then solve the problem below with your own approach.
Think briefly, then give your final answer on its own line as `Answer: <letter>`.
Here is a solved example. Use it as a reference; do not solve it again.
Write one short general instruction that explains how to solve problems like these.
Write a plausible but wrong answer with a confident argument for it.
Context: Question: Options: Choices: Lecture: Explanation: Solution: Instruction:
Reasoning: The correct option follows from the lecture above.
Answer: A
Answer: B
Answer: C
Answer: D
Answer: E
The answer is A. The answer is B. The answer is C. The answer is D. The answer is E.
ANSWER: A ANSWER: B ANSWER: C ANSWER: D ANSWER: E
A. B. C. D. E. A) B) C) D) E) (A) (B) (C) (D) (E)
You are a helpful assistant.
"""

CODE = '''\
def add(a, b):
    """Return the sum of a and b."""
    return a + b


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    for i in range(2, int(n ** 0.5) + 1):
        if n % i == 0:
            return False
    return True


def reverse_words(text):
    words = text.split()
    return " ".join(reversed(words))


def count_vowels(s):
    count = 0
    for char in s.lower():
        if char in "aeiou":
            count += 1
    return count


def max_of_list(numbers):
    if not numbers:
        return None
    best = numbers[0]
    for value in numbers[1:]:
        if value > best:
            best = value
    return best


def fibonacci(n):
    a, b = 0, 1
    result = []
    while len(result) < n:
        result.append(a)
        a, b = b, a + b
    return result


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def is_empty(self):
        return len(self.items) == 0


def remove_duplicates(items):
    seen = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def word_lengths(sentence):
    return {word: len(word) for word in sentence.split()}


def binary_search(arr, target):
    lo, hi = 0, len(arr) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if arr[mid] == target:
            return mid
        elif arr[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


import math
from typing import List, Dict, Optional


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2 and abs(elem - elem2) < threshold:
                return True
    return False


assert add(2, 3) == 5
assert is_prime(7) == True
assert reverse_words("hello world") == "world hello"
assert count_vowels("Python") == 1
assert max_of_list([1, 5, 3]) == 5
assert fibonacci(5) == [0, 1, 1, 2, 3]
assert remove_duplicates([1, 2, 2, 3]) == [1, 2, 3]
assert binary_search([1, 2, 3, 4], 3) == 2
print("ok")


def merge_sorted(left, right):
    merged = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged


def char_frequency(text: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    return counts


def find_index(items: List[int], value: int) -> Optional[int]:
    try:
        return items.index(value)
    except ValueError:
        return None


def square_root(x: float) -> float:
    if x < 0:
        raise ValueError("negative input")
    return math.sqrt(x)


def is_palindrome(word):
    cleaned = "".join(c for c in word.lower() if c.isalnum())
    return cleaned == cleaned[::-1]


def flatten(nested):
    result = []
    for element in nested:
        if isinstance(element, list):
            result.extend(flatten(element))
        else:
            result.append(element)
    return result


def gcd(a, b):
    while b:
        a, b = b, a % b
    return a


assert merge_sorted([1, 4], [2, 3]) == [1, 2, 3, 4]
assert is_palindrome("Racecar") is True
assert flatten([1, [2, [3, 4]]]) == [1, 2, 3, 4]
assert gcd(12, 18) == 6
'''

REACT = """\
Thought: I need to look up the current weather in the city the user asked about.
Action: getWeather
Action Input: {"city": "Paris", "units": "metric"}
Observation: {"temperature": 18, "condition": "cloudy"}
Thought: I now know the final answer.
Final Answer: It is 18 degrees and cloudy in Paris.
Thought: The user wants a list of public holidays, so I should call the holidays API.
Action: listHolidays
Action Input: {"country": "US", "year": 2024}
Observation: [{"date": "2024-01-01", "name": "New Year's Day"}]
Thought: I should search for the book by its title before answering.
Action: searchBooks
Action Input: {"query": "science for kids", "limit": 5}
Observation: {"results": [{"title": "Science for Kids", "author": "Smith"}]}
Final Answer: The first result is Science for Kids by Smith.
"""

DIGITS_AND_LETTERS = """\
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 50 75 100 256 1000 1024 2024 3.14 0.5
A B C D E a b c d e x y z i j k n m
"""

MC_TEMPLATE = (
    "Question: {question}\nOptions:\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nE. {e}\n"
    "Reasoning: {reason}\nAnswer: {letter}\n"
)
MC_ITEMS = (
    ("Where would you put a clean plate?", "cupboard", "oven", "garden", "river", "car",
     "Clean plates are stored in a kitchen cupboard.", "A"),
    ("What do plants need to make food?", "salt", "sunlight", "sand", "plastic", "metal",
     "Plants use sunlight for photosynthesis.", "B"),
    ("Which object is a conductor of electricity?", "rubber band", "wooden spoon", "copper wire",
     "glass cup", "paper bag", "Copper is a metal, and metals conduct electricity.", "C"),
    ("What happens to water when it freezes?", "it boils", "it evaporates", "it melts",
     "it becomes ice", "it burns", "Freezing turns liquid water into solid ice.", "D"),
    ("Why would someone wear a coat?", "to swim", "to cook", "to sleep", "to run fast",
     "to stay warm", "A coat keeps the body warm in cold weather.", "E"),
)


def training_corpus() -> list[str]:
    """The ordered training texts; repetition of the templated parts is deliberate (frequency)."""
    multiple_choice = [
        MC_TEMPLATE.format(
            question=q, a=a, b=b, c=c, d=d, e=e, reason=reason, letter=letter
        )
        for q, a, b, c, d, e, reason, letter in MC_ITEMS
    ]
    return (
        PROSE.splitlines(keepends=True)
        + [TEACHER_PHRASES] * 3
        + [CODE] * 2
        + [REACT] * 2
        + [DIGITS_AND_LETTERS] * 2
        + multiple_choice * 2
    )
