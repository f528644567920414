"""Original HumanEval-style problems (openai/openai_humaneval schema).

Each problem is a signature, a docstring with examples, a canonical body and example calls. The
docstring examples and the ``check(candidate)`` asserts are computed by running the canonical
solution, so they cannot disagree with it. Task ids are ``UniSD/<n>`` (not ``HumanEval/<n>``)
so that no one mistakes them for real HumanEval problems.
"""

from __future__ import annotations

from typing import Any

# (entry point, imports, signature (after "def "), description, body, doc-example calls, test calls)
PROBLEMS: list[tuple[str, str, str, str, str, list[str], list[str]]] = [
    ("alternating_sum", "from typing import List", "alternating_sum(numbers: List[int]) -> int",
     "Return numbers[0] - numbers[1] + numbers[2] - ... (0 for an empty list).",
     "    return sum(n if i % 2 == 0 else -n for i, n in enumerate(numbers))\n",
     ["[5, 3, 2]"], ["[]", "[1]", "[1, 2, 3, 4]", "[10, -10, 10]"]),
    ("count_consonants", "", "count_consonants(text: str) -> int",
     "Count the letters of text that are not vowels (a, e, i, o, u), ignoring case.",
     "    return sum(1 for ch in text.lower() if ch.isalpha() and ch not in 'aeiou')\n",
     ["'Hello!'"], ["''", "'AEIOU'", "'rhythm'", "'Big Cat 42'"]),
    ("middle_chars", "", "middle_chars(word: str) -> str",
     "Return the middle character of word, or the middle two characters if its length is even.",
     "    half = len(word) // 2\n    return word[half] if len(word) % 2 else word[half - 1:half + 1]\n",
     ["'abcde'", "'abcd'"], ["'x'", "'xy'", "'python'", "'level'"]),
    ("is_balanced", "", "is_balanced(brackets: str) -> bool",
     "Return True if every bracket in the string of '()[]{}' characters is closed in the right order.",
     "    pairs = {')': '(', ']': '[', '}': '{'}\n    stack = []\n    for ch in brackets:\n"
     "        if ch in pairs:\n            if not stack or stack.pop() != pairs[ch]:\n                return False\n"
     "        else:\n            stack.append(ch)\n    return not stack\n",
     ["'([]{})'", "'(]'"], ["''", "'(('", "'{[()()]}'", "')('", "'[(])'"]),
    ("squeeze_spaces", "", "squeeze_spaces(text: str) -> str",
     "Replace every run of consecutive spaces in text with a single space.",
     "    out = []\n    for ch in text:\n        if ch == ' ' and out and out[-1] == ' ':\n            continue\n"
     "        out.append(ch)\n    return ''.join(out)\n",
     ["'a   b  c'"], ["''", "'   '", "'no change'", "' x  y '"]),
    ("next_multiple", "", "next_multiple(n: int, k: int) -> int",
     "Return the smallest multiple of the positive integer k that is greater than or equal to n.",
     "    return -(-n // k) * k\n", ["7, 5", "10, 5"], ["0, 3", "1, 1", "11, 4", "-7, 5"]),
    ("strictly_increasing_digits", "", "strictly_increasing_digits(n: int) -> bool",
     "Return True if the decimal digits of the non-negative integer n strictly increase from left to right.",
     "    digits = str(n)\n    return all(a < b for a, b in zip(digits, digits[1:]))\n",
     ["1359", "1224"], ["0", "98", "123456789", "10"]),
    ("camel_to_snake", "", "camel_to_snake(name: str) -> str",
     "Convert a camelCase name to snake_case.",
     "    return ''.join('_' + ch.lower() if ch.isupper() else ch for ch in name)\n",
     ["'camelCaseName'"], ["'x'", "'alreadysnake'", "'parseJsonData'", "'aB'"]),
    ("argmax_first", "from typing import List", "argmax_first(values: List[int]) -> int",
     "Return the index of the largest value in a non-empty list (the first such index on ties).",
     "    return values.index(max(values))\n", ["[3, 9, 2, 9]"], ["[1]", "[5, 4]", "[-2, -1, -1]", "[0, 0, 7]"]),
    ("floor_quotients", "from typing import List", "floor_quotients(numbers: List[int], divisor: int) -> List[int]",
     "Return each number floor-divided by divisor; return an empty list if divisor is 0.",
     "    if divisor == 0:\n        return []\n    return [n // divisor for n in numbers]\n",
     ["[7, 8, 9], 2"], ["[1, 2], 0", "[], 3", "[-7, 7], 2", "[10, 20], 10"]),
    ("longest_run", "from typing import List", "longest_run(values: List[int]) -> int",
     "Return the length of the longest run of equal adjacent values (0 for an empty list).",
     "    best = current = 0\n    for i, value in enumerate(values):\n"
     "        current = current + 1 if i and value == values[i - 1] else 1\n        best = max(best, current)\n"
     "    return best\n", ["[1, 1, 2, 2, 2, 3]"], ["[]", "[4]", "[1, 2, 3]", "[5, 5, 5, 5]"]),
    ("vowel_positions", "from typing import List", "vowel_positions(word: str) -> List[int]",
     "Return the indices of the vowels (a, e, i, o, u, any case) in word.",
     "    return [i for i, ch in enumerate(word) if ch.lower() in 'aeiou']\n",
     ["'banana'"], ["''", "'sky'", "'AEx'", "'queue'"]),
    ("sum_primes_upto", "", "sum_primes_upto(n: int) -> int",
     "Return the sum of all prime numbers less than or equal to n.",
     "    total = 0\n    for k in range(2, n + 1):\n        if all(k % d for d in range(2, int(k ** 0.5) + 1)):\n"
     "            total += k\n    return total\n", ["10"], ["1", "2", "20", "30"]),
    ("title_long_words", "", "title_long_words(sentence: str, min_len: int) -> str",
     "Capitalize the first letter of each space-separated word that has at least min_len characters.",
     "    return ' '.join(w[:1].upper() + w[1:] if len(w) >= min_len else w for w in sentence.split(' '))\n",
     ["'the cat sat on a mat', 3"], ["'', 1", "'a bb ccc', 2", "'hello world', 6", "'x', 1"]),
    ("trace", "from typing import List", "trace(matrix: List[List[int]]) -> int",
     "Return the sum of the diagonal entries of a square matrix.",
     "    return sum(matrix[i][i] for i in range(len(matrix)))\n",
     ["[[1, 2], [3, 4]]"], ["[]", "[[7]]", "[[1, 0, 0], [0, 2, 0], [0, 0, 3]]", "[[-1, 5], [5, -1]]"]),
    ("collatz_steps", "", "collatz_steps(n: int) -> int",
     "Return how many Collatz steps (n -> n / 2 if even, else 3n + 1) it takes to reach 1 from the positive integer n.",
     "    steps = 0\n    while n != 1:\n        n = n // 2 if n % 2 == 0 else 3 * n + 1\n        steps += 1\n    return steps\n",
     ["6"], ["1", "2", "7", "27"]),
    ("unique_letters", "", "unique_letters(text: str) -> str",
     "Return the distinct letters of text, lowercased and in alphabetical order, as one string.",
     "    return ''.join(sorted({ch.lower() for ch in text if ch.isalpha()}))\n",
     ["'Hello, World'"], ["''", "'123'", "'aAbB'", "'zebra'"]),
]


def run_calls(entry_point: str, source: str, calls: list[str]) -> list[tuple[str, Any]]:
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - our own canonical solution, run at generation time
    return [(args, eval(f"{entry_point}({args})", namespace)) for args in calls]  # noqa: S307


def humaneval_rows(seed: int) -> list[dict[str, Any]]:
    """All problems in table order (``seed`` is unused: HumanEval is an eval split only)."""
    rows = []
    for number, (entry, imports, signature, description, body, examples, tests) in enumerate(PROBLEMS):
        header = f"{imports}\n\n\n" if imports else ""
        canonical_source = f"{header}def {signature}:\n{body}"
        example_lines = "".join(
            f"    >>> {entry}({args})\n    {result!r}\n" for args, result in run_calls(entry, canonical_source, examples)
        )
        prompt = f'{header}def {signature}:\n    """ {description}\n{example_lines}    """\n'
        checks = "".join(
            f"    assert candidate({args}) == {result!r}\n"
            for args, result in run_calls(entry, canonical_source, examples + tests)
        )
        rows.append({
            "task_id": f"UniSD/{number}",
            "prompt": prompt,
            "canonical_solution": body,
            "test": f"\n\nMETADATA = {{\n    'author': 'unisd',\n    'dataset': 'sample'\n}}\n\n\ndef check(candidate):\n{checks}",
            "entry_point": entry,
        })
    return rows
