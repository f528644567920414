"""Original ToolAlpaca-style items for five invented APIs, in the schema documented in
``unisd_core.data.adapters.toolalpaca`` (id, tool_name, tool_description, instruction,
golden_steps [{action, action_input (JSON string)}], final_answer).

Each tool has three instruction templates (one with two calls); slots are filled with a seeded
generator and the golden steps follow from the slots, so the calls are correct by construction.
The APIs are fictional: no observation exists, and the final answer says what was requested
rather than inventing returned data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Step = tuple[str, dict[str, Any]]
Template = Callable[[random.Random], tuple[str, list[Step], str]]

DOCS: dict[str, str] = {
    "WeatherDesk": """WeatherDesk: current weather and short-term forecasts for cities worldwide.
Functions:
- getCurrentWeather: the current weather in a city.
  Parameters: {"city": "string, required, the city name", "units": "string, optional, 'metric' or 'imperial' (default 'metric')"}
  Output: temperature, conditions, humidity and wind speed.
- getForecast: a daily forecast.
  Parameters: {"city": "string, required", "days": "integer, required, 1 to 7"}
  Output: a list of days with high, low and conditions.""",
    "CurrencyLab": """CurrencyLab: exchange rates and currency conversion (ISO 4217 codes such as USD, EUR, JPY).
Functions:
- getExchangeRate: the latest rate between two currencies.
  Parameters: {"base": "string, required, currency code", "target": "string, required, currency code"}
  Output: the rate and its timestamp.
- convertAmount: convert an amount of money.
  Parameters: {"amount": "number, required", "from": "string, required, currency code", "to": "string, required, currency code"}
  Output: the converted amount and the rate used.""",
    "BookFinder": """BookFinder: search a catalogue of books.
Functions:
- searchBooks: books matching a query.
  Parameters: {"query": "string, required, subject or title words", "author": "string, optional", "limit": "integer, optional, maximum number of results (default 10)"}
  Output: a list of books with title, author, year and ISBN.
- getBookByISBN: one book's details.
  Parameters: {"isbn": "string, required, 13 digits"}
  Output: title, author, publisher, year and page count.""",
    "RecipeBox": """RecipeBox: recipes and nutrition facts.
Functions:
- searchRecipes: recipes that use an ingredient.
  Parameters: {"ingredient": "string, required", "maxMinutes": "integer, optional, total cooking time limit", "diet": "string, optional, one of 'vegetarian', 'vegan', 'gluten-free'"}
  Output: a list of recipes with name, time and rating.
- getNutrition: nutrition facts of a dish.
  Parameters: {"dish": "string, required, the dish name"}
  Output: calories, protein, fat and carbohydrates per serving.""",
    "WorldClock": """WorldClock: local times and time-zone conversion.
Functions:
- getLocalTime: the current local time in a city.
  Parameters: {"city": "string, required"}
  Output: local date, time and UTC offset.
- convertTime: convert a clock time from one city's time zone to another's.
  Parameters: {"time": "string, required, 24-hour HH:MM", "fromCity": "string, required", "toCity": "string, required"}
  Output: the converted time and the day offset.""",
}

CITIES = ["Lisbon", "Nairobi", "Osaka", "Toronto", "Santiago", "Helsinki", "Hanoi", "Denver", "Cairo", "Perth"]
CURRENCIES = {"USD": "US dollars", "EUR": "euros", "JPY": "Japanese yen", "GBP": "British pounds",
              "CAD": "Canadian dollars", "INR": "Indian rupees", "CHF": "Swiss francs"}
TOPICS = ["beekeeping", "volcanoes", "chess openings", "sourdough baking", "urban gardening", "bird migration"]
AUTHORS = ["Mara Quill", "Devon Ashby", "Ines Calder", "Tobias Wren"]
INGREDIENTS = ["chickpeas", "spinach", "mushrooms", "salmon", "lentils", "sweet potatoes", "tofu"]
DIETS = ["vegetarian", "vegan", "gluten-free"]
# (how the user says it, the dish name the API takes)
DISHES = [("a bowl of ramen", "ramen"), ("a slice of margherita pizza", "margherita pizza"),
          ("a Caesar salad", "Caesar salad"), ("a beef burrito", "beef burrito")]
# Ingredients that fit every diet in DIETS (salmon is neither vegetarian nor vegan).
PLANT_INGREDIENTS = [name for name in INGREDIENTS if name != "salmon"]


def weather_now(rng: random.Random) -> tuple[str, list[Step], str]:
    city, units = rng.choice(CITIES), rng.choice(["metric", "imperial"])
    return (f"What is the weather like in {city} right now? Please use {units} units.",
            [("getCurrentWeather", {"city": city, "units": units})],
            f"Here are the current conditions in {city}, in {units} units, from getCurrentWeather.")


def weather_forecast(rng: random.Random) -> tuple[str, list[Step], str]:
    city, days = rng.choice(CITIES), rng.randint(2, 7)
    return (f"Give me the {days}-day forecast for {city}.",
            [("getForecast", {"city": city, "days": days})],
            f"Here is the {days}-day forecast for {city}.")


def weather_both(rng: random.Random) -> tuple[str, list[Step], str]:
    city, days = rng.choice(CITIES), rng.randint(2, 5)
    return (f"I'm travelling to {city}. Tell me the weather there now in metric units and the "
            f"forecast for the next {days} days.",
            [("getCurrentWeather", {"city": city, "units": "metric"}),
             ("getForecast", {"city": city, "days": days})],
            f"Here are the current conditions in {city} and its {days}-day forecast.")


def currency_convert(rng: random.Random) -> tuple[str, list[Step], str]:
    source, target = rng.sample(sorted(CURRENCIES), 2)
    amount = rng.choice([20, 75, 150, 1200, 9.5])
    return (f"How much is {amount} {CURRENCIES[source]} in {CURRENCIES[target]}?",
            [("convertAmount", {"amount": amount, "from": source, "to": target})],
            f"This is {amount} {source} converted to {target} at the current rate.")


def currency_rate(rng: random.Random) -> tuple[str, list[Step], str]:
    source, target = rng.sample(sorted(CURRENCIES), 2)
    return (f"What is the current exchange rate from {CURRENCIES[source]} to {CURRENCIES[target]}?",
            [("getExchangeRate", {"base": source, "target": target})],
            f"This is the latest {source} to {target} exchange rate.")


def currency_two(rng: random.Random) -> tuple[str, list[Step], str]:
    source, first, second = rng.sample(sorted(CURRENCIES), 3)
    amount = rng.choice([50, 300, 2500])
    return (f"Convert {amount} {CURRENCIES[source]} into {CURRENCIES[first]} and into {CURRENCIES[second]}.",
            [("convertAmount", {"amount": amount, "from": source, "to": first}),
             ("convertAmount", {"amount": amount, "from": source, "to": second})],
            f"These are {amount} {source} in {first} and in {second}.")


def books_topic(rng: random.Random) -> tuple[str, list[Step], str]:
    topic, limit = rng.choice(TOPICS), rng.randint(3, 8)
    return (f"Find up to {limit} books about {topic}.",
            [("searchBooks", {"query": topic, "limit": limit})],
            f"Here are up to {limit} books about {topic} from the catalogue.")


def books_author(rng: random.Random) -> tuple[str, list[Step], str]:
    topic, author = rng.choice(TOPICS), rng.choice(AUTHORS)
    return (f"Are there any books on {topic} written by {author}?",
            [("searchBooks", {"query": topic, "author": author})],
            f"These are the catalogue results for {topic} by {author}.")


def books_isbn(rng: random.Random) -> tuple[str, list[Step], str]:
    isbn = "978" + "".join(str(rng.randint(0, 9)) for _ in range(10))
    return (f"Which book has the ISBN {isbn}, and who published it?",
            [("getBookByISBN", {"isbn": isbn})],
            f"These are the title and publisher recorded for ISBN {isbn}.")


def recipes_diet(rng: random.Random) -> tuple[str, list[Step], str]:
    ingredient, diet = rng.choice(PLANT_INGREDIENTS), rng.choice(DIETS)
    return (f"Suggest some {diet} recipes that use {ingredient}.",
            [("searchRecipes", {"ingredient": ingredient, "diet": diet})],
            f"Here are {diet} recipes with {ingredient}.")


def recipes_quick(rng: random.Random) -> tuple[str, list[Step], str]:
    ingredient, minutes = rng.choice(INGREDIENTS), rng.choice([15, 20, 30, 45])
    return (f"I only have {minutes} minutes. What can I cook with {ingredient}?",
            [("searchRecipes", {"ingredient": ingredient, "maxMinutes": minutes})],
            f"These recipes with {ingredient} take at most {minutes} minutes.")


def recipes_nutrition(rng: random.Random) -> tuple[str, list[Step], str]:
    phrase, dish = rng.choice(DISHES)
    return (f"How many calories are in {phrase}?", [("getNutrition", {"dish": dish})],
            f"These are the nutrition facts, calories included, for {phrase}.")


def clock_now(rng: random.Random) -> tuple[str, list[Step], str]:
    city = rng.choice(CITIES)
    return (f"What time is it in {city} at the moment?", [("getLocalTime", {"city": city})],
            f"This is the current local time in {city}.")


def clock_convert(rng: random.Random) -> tuple[str, list[Step], str]:
    first, second = rng.sample(CITIES, 2)
    time = f"{rng.randint(0, 23):02d}:{rng.choice([0, 15, 30, 45]):02d}"
    return (f"My meeting is at {time} in {first}. What time is that in {second}?",
            [("convertTime", {"time": time, "fromCity": first, "toCity": second})],
            f"This is {time} in {first} expressed in {second} local time.")


def clock_two(rng: random.Random) -> tuple[str, list[Step], str]:
    first, second = rng.sample(CITIES, 2)
    return (f"Tell me the current local time in {first} and in {second}.",
            [("getLocalTime", {"city": first}), ("getLocalTime", {"city": second})],
            f"These are the current local times in {first} and {second}.")


TEMPLATES: dict[str, list[Template]] = {
    "WeatherDesk": [weather_now, weather_forecast, weather_both],
    "CurrencyLab": [currency_convert, currency_rate, currency_two],
    "BookFinder": [books_topic, books_author, books_isbn],
    "RecipeBox": [recipes_diet, recipes_quick, recipes_nutrition],
    "WorldClock": [clock_now, clock_convert, clock_two],
}


def toolalpaca_rows(seed: int, per_template: int = 4) -> list[dict[str, Any]]:
    """All generated items (duplicates dropped), in a seeded order."""
    rng = random.Random(seed)
    rows: dict[str, dict[str, Any]] = {}
    for tool_name, templates in TEMPLATES.items():
        for template in templates:
            for _ in range(per_template):
                instruction, steps, final_answer = template(rng)
                rows.setdefault(instruction, {
                    "tool_name": tool_name,
                    "tool_description": DOCS[tool_name],
                    "instruction": instruction,
                    "golden_steps": [{"action": action, "action_input": json.dumps(arguments)}
                                     for action, arguments in steps],
                    "final_answer": final_answer,
                })
    ordered = list(rows.values())
    rng.shuffle(ordered)
    return [{"id": f"toolalpaca-{number:03d}", **row} for number, row in enumerate(ordered)]
