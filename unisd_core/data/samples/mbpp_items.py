"""Original MBPP-style tasks: a one-line description, a reference solution and example calls.

The asserts are not written by hand: ``mbpp_rows`` runs each reference on its example calls and
writes ``assert f(args) == <repr of the result>``, so every reference passes its tests by
construction (the unit tests re-run them in a subprocess anyway). Task ids start at 1001 (train,
``full`` schema) and 2001 (test, ``sanitized`` schema) so they never collide with real MBPP ids.
"""

from __future__ import annotations

from typing import Any

# (description, reference code, example calls: argument lists as Python source)
TRAIN_TASKS: list[tuple[str, str, list[str]]] = [
    ("Write a function to add up the digits of a non-negative integer.",
     "def digit_sum(n):\n    return sum(int(d) for d in str(n))", ["0", "7", "1234", "90817"]),
    ("Write a function to reverse the order of the words in a sentence.",
     "def reverse_words(sentence):\n    return ' '.join(reversed(sentence.split()))",
     ["'hello big world'", "'one'", "'a b c d'"]),
    ("Write a python function to count the vowels in a string, ignoring case.",
     "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in 'aeiou')",
     ["'Banana'", "'rhythm'", "'EDUCATION'"]),
    ("Write a function to check whether an integer reads the same backwards.",
     "def is_palindrome_number(n):\n    return str(n) == str(n)[::-1]", ["121", "10", "7", "12321"]),
    ("Write a function to find the second largest distinct value in a list.",
     "def second_largest(values):\n    return sorted(set(values))[-2]",
     ["[4, 1, 9, 7]", "[5, 5, 3, 1]", "[10, 20]"]),
    ("Write a function to flatten a list of lists by one level.",
     "def flatten_once(nested):\n    return [item for inner in nested for item in inner]",
     ["[[1, 2], [3], []]", "[['a'], ['b', 'c']]", "[]"]),
    ("Write a function to find the greatest common divisor of two positive integers.",
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a", ["12, 18", "17, 5", "100, 75"]),
    ("Write a function to check whether a year is a leap year in the Gregorian calendar.",
     "def is_leap_year(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)",
     ["2024", "1900", "2000", "2023"]),
    ("Write a function to return the running totals of a list of numbers.",
     "def running_totals(values):\n    totals, current = [], 0\n    for value in values:\n"
     "        current += value\n        totals.append(current)\n    return totals",
     ["[1, 2, 3, 4]", "[5, -5, 5]", "[]"]),
    ("Write a function to remove duplicates from a list while keeping the first occurrences in order.",
     "def dedupe(values):\n    seen, result = set(), []\n    for value in values:\n"
     "        if value not in seen:\n            seen.add(value)\n            result.append(value)\n"
     "    return result", ["[3, 1, 3, 2, 1]", "['x', 'x']", "[]"]),
    ("Write a function to count how often each character occurs in a string.",
     "def char_counts(text):\n    counts = {}\n    for ch in text:\n        counts[ch] = counts.get(ch, 0) + 1\n"
     "    return counts", ["'hello'", "'aab'", "''"]),
    ("Write a function to multiply all the numbers in a list.",
     "def product(values):\n    result = 1\n    for value in values:\n        result *= value\n    return result",
     ["[2, 3, 4]", "[]", "[5, 0, 7]"]),
    ("Write a function to return the n-th triangular number.",
     "def triangular(n):\n    return n * (n + 1) // 2", ["1", "4", "10"]),
    ("Write a function to count the words in a sentence that are longer than k characters.",
     "def count_long_words(sentence, k):\n    return sum(1 for word in sentence.split() if len(word) > k)",
     ["'the quick brown fox', 3", "'a bb ccc', 1", "'', 2"]),
    ("Write a function to capitalize the first letter of every word in a sentence.",
     "def capitalize_words(sentence):\n    return ' '.join(w[:1].upper() + w[1:] for w in sentence.split(' '))",
     ["'good morning sun'", "'x'", "'already Fine'"]),
    ("Write a function to check whether two strings are anagrams of each other.",
     "def are_anagrams(a, b):\n    return sorted(a) == sorted(b)", ["'listen', 'silent'", "'abc', 'abd'", "'', ''"]),
    ("Write a function to find the difference between the largest and smallest values in a list.",
     "def value_range(values):\n    return max(values) - min(values)", ["[3, 9, 1]", "[5]", "[-4, 4]"]),
    ("Write a function to merge two sorted lists into one sorted list.",
     "def merge_sorted(a, b):\n    i = j = 0\n    merged = []\n    while i < len(a) and j < len(b):\n"
     "        if a[i] <= b[j]:\n            merged.append(a[i])\n            i += 1\n        else:\n"
     "            merged.append(b[j])\n            j += 1\n    return merged + a[i:] + b[j:]",
     ["[1, 4, 6], [2, 3, 7]", "[], [1]", "[1, 1], [1]"]),
    ("Write a function to return the index of the first occurrence of a value in a list, or -1 if absent.",
     "def find_index(values, target):\n    for index, value in enumerate(values):\n"
     "        if value == target:\n            return index\n    return -1",
     ["[4, 2, 2], 2", "[1, 2], 5", "[], 0"]),
    ("Write a python function to count the even numbers in a list.",
     "def count_even(values):\n    return sum(1 for value in values if value % 2 == 0)",
     ["[1, 2, 3, 4]", "[1, 3]", "[0, -2]"]),
    ("Write a function to convert a non-negative integer to its binary representation as a string.",
     "def to_binary(n):\n    return bin(n)[2:]", ["0", "5", "64"]),
    ("Write a function to check whether a list is sorted in non-decreasing order.",
     "def is_sorted(values):\n    return all(a <= b for a, b in zip(values, values[1:]))",
     ["[1, 2, 2, 5]", "[3, 1]", "[]"]),
    ("Write a function to rotate a list to the left by k positions.",
     "def rotate_left(values, k):\n    if not values:\n        return []\n    k %= len(values)\n"
     "    return values[k:] + values[:k]", ["[1, 2, 3, 4], 1", "[1, 2, 3], 5", "[], 3"]),
    ("Write a function to find the longest word in a sentence (the first one if there is a tie).",
     "def longest_word(sentence):\n    return max(sentence.split(), key=len)",
     ["'a quick brown fox'", "'hi yo'", "'elephant ant'"]),
    ("Write a function to compute the sum of the squares of the first n natural numbers.",
     "def sum_of_squares(n):\n    return sum(i * i for i in range(1, n + 1))", ["1", "3", "10"]),
    ("Write a function to check whether a number is prime.",
     "def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n"
     "        if n % i == 0:\n            return False\n        i += 1\n    return True",
     ["1", "2", "15", "29"]),
    ("Write a function to split a list into chunks of size n (the last chunk may be shorter).",
     "def chunk(values, n):\n    return [values[i:i + n] for i in range(0, len(values), n)]",
     ["[1, 2, 3, 4, 5], 2", "[1, 2], 3", "[], 4"]),
    ("Write a function to count the occurrences of a substring in a string, overlapping ones included.",
     "def count_overlapping(text, sub):\n    return sum(1 for i in range(len(text) - len(sub) + 1)"
     " if text[i:i + len(sub)] == sub)", ["'aaaa', 'aa'", "'abcabc', 'abc'", "'xyz', 'q'"]),
    ("Write a function to replace every space in a string with an underscore.",
     "def underscore_spaces(text):\n    return text.replace(' ', '_')", ["'a b c'", "'none'", "'  '"]),
    ("Write a function to return the sums of each pair of adjacent elements of a list.",
     "def adjacent_sums(values):\n    return [a + b for a, b in zip(values, values[1:])]",
     ["[1, 2, 3]", "[5]", "[-1, 1, -1]"]),
    ("Write a python function to count the distinct elements of a list.",
     "def count_distinct(values):\n    return len(set(values))", ["[1, 1, 2]", "[]", "['a', 'b', 'a']"]),
    ("Write a function to compute the digital root of a non-negative integer "
     "(add the digits repeatedly until one digit remains).",
     "def digital_root(n):\n    while n >= 10:\n        n = sum(int(d) for d in str(n))\n    return n",
     ["0", "38", "99999"]),
    ("Write a function that returns the FizzBuzz strings for the numbers 1 to n.",
     "def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n        word = ('Fizz' if i % 3 == 0 else '')"
     " + ('Buzz' if i % 5 == 0 else '')\n        out.append(word or str(i))\n    return out",
     ["5", "15", "1"]),
    ("Write a function to find the fewest coins of values 25, 10, 5 and 1 that add up to an amount.",
     "def min_coins(amount):\n    count = 0\n    for coin in (25, 10, 5, 1):\n        count += amount // coin\n"
     "        amount %= coin\n    return count", ["0", "30", "99"]),
]

TEST_TASKS: list[tuple[str, str, list[str]]] = [
    ("Write a python function to count the uppercase letters in a string.",
     "def count_upper(text):\n    return sum(1 for ch in text if ch.isupper())", ["'Hello World'", "'abc'", "'ABC d'"]),
    ("Write a function to return the squares of the odd numbers of a list, in order.",
     "def odd_squares(values):\n    return [v * v for v in values if v % 2 == 1]", ["[1, 2, 3]", "[2, 4]", "[-3, 5]"]),
    ("Write a function to return the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1.",
     "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a", ["0", "1", "10"]),
    ("Write a function to check whether a sentence contains every letter of the English alphabet.",
     "def is_pangram(sentence):\n    return set('abcdefghijklmnopqrstuvwxyz') <= set(sentence.lower())",
     ["'The quick brown fox jumps over the lazy dog'", "'hello there'", "''"]),
    ("Write a python function to multiply the digits of a positive integer.",
     "def digit_product(n):\n    result = 1\n    for d in str(n):\n        result *= int(d)\n    return result",
     ["234", "5", "1203"]),
    ("Write a function to swap the keys and values of a dictionary whose values are unique.",
     "def invert_dict(mapping):\n    return {value: key for key, value in mapping.items()}",
     ["{'a': 1, 'b': 2}", "{}", "{1: 'x'}"]),
    ("Write a function to find the k-th smallest element of a list (k starts at 1).",
     "def kth_smallest(values, k):\n    return sorted(values)[k - 1]", ["[7, 2, 9, 4], 2", "[5], 1", "[3, 3, 1], 3"]),
    ("Write a function to add up the elements at even indices of a list.",
     "def even_index_sum(values):\n    return sum(values[::2])", ["[1, 2, 3, 4, 5]", "[]", "[10]"]),
    ("Write a function to remove all vowels from a string.",
     "def strip_vowels(text):\n    return ''.join(ch for ch in text if ch.lower() not in 'aeiou')",
     ["'education'", "'rhythm'", "'AbE'"]),
    ("Write a function to count the words in a sentence.",
     "def word_count(sentence):\n    return len(sentence.split())", ["'one two three'", "''", "'  spaced   out '"]),
    ("Write a function to transpose a matrix given as a list of rows.",
     "def transpose(matrix):\n    return [list(row) for row in zip(*matrix)]",
     ["[[1, 2], [3, 4]]", "[[1, 2, 3]]", "[]"]),
    ("Write a function to check whether a positive integer is a power of two.",
     "def is_power_of_two(n):\n    return n > 0 and n & (n - 1) == 0", ["1", "12", "64"]),
    ("Write a function to compute the factorial of a non-negative integer.",
     "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
     ["0", "5", "10"]),
    ("Write a function to find the most frequent element of a non-empty list "
     "(the one that appears first if there is a tie).",
     "def most_frequent(values):\n    return max(values, key=values.count)", ["[1, 2, 2, 3]", "['a', 'b']", "[4, 4, 5, 5, 5]"]),
    ("Write a function to interleave two lists of equal length.",
     "def interleave(a, b):\n    return [x for pair in zip(a, b) for x in pair]", ["[1, 2], ['a', 'b']", "[], []", "[0], [9]"]),
    ("Write a function to run-length encode a string into a list of (character, count) tuples.",
     "def run_length(text):\n    runs = []\n    for ch in text:\n        if runs and runs[-1][0] == ch:\n"
     "            runs[-1] = (ch, runs[-1][1] + 1)\n        else:\n            runs.append((ch, 1))\n    return runs",
     ["'aaabcc'", "''", "'abc'"]),
    ("Write a function to return the elements of the first list that also appear in the second, "
     "in the order of the first list.",
     "def common_elements(a, b):\n    return [x for x in a if x in b]", ["[1, 2, 3, 4], [4, 2]", "[1], []", "['a', 'b'], ['b']"]),
    ("Write a function to add up the natural numbers below n that are multiples of 3 or 5.",
     "def sum_multiples(n):\n    return sum(i for i in range(n) if i % 3 == 0 or i % 5 == 0)", ["10", "1", "20"]),
]


def asserts_for(code: str, calls: list[str]) -> list[str]:
    """Run the reference on each call and write the assert that pins its result."""
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own reference code, run at generation time
    name = code.split("def ", 1)[1].split("(", 1)[0]
    return [f"assert {name}({args}) == {eval(f'{name}({args})', namespace)!r}" for args in calls]  # noqa: S307


def mbpp_rows(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows in the ``full`` schema, test rows in the ``sanitized`` schema)."""
    train = [
        {"task_id": 1001 + i, "text": text, "code": code, "test_list": asserts_for(code, calls),
         "test_setup_code": "", "challenge_test_list": []}
        for i, (text, code, calls) in enumerate(TRAIN_TASKS)
    ]
    test = [
        {"source_file": "unisd_original_samples.py", "task_id": 2001 + i, "prompt": text,
         "code": code, "test_imports": [], "test_list": asserts_for(code, calls)}
        for i, (text, code, calls) in enumerate(TEST_TASKS)
    ]
    return train, test
