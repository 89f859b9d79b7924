"""Language instructions per task and mode: a grammar of paraphrases, and off-task sentences.

    sample_instruction(task, mode, rng) -> str            # one paraphrase of mode `mode`
    paraphrases(task, mode, rng, n) -> list[str]          # n distinct paraphrases (fewer if the
                                                          # grammar runs out)
    off_task_sentences(task, rng, n) -> list[str]         # sentences that command no mode
    misspell(text, rng) -> str                            # the text with a slip of the keyboard

Tasks: ``reach_around`` (left / right of the pillar), ``reach_around_maze`` (24 routes, one gap
per row of posts), ``pick`` (red / blue cube). The grammar is what collection writes into a
dataset (each episode records one instruction and a list of paraphrases of its mode) and what a
language run's grounding classifier learns from. It covers synonyms for verbs, obstacles, cubes
and colours (Pick's include the xkcd colour survey's names for red and blue), the route's side
and the obstacle's side ("keep the pillar on your right" = left; on the maze, where a row's posts
stay: "one post on your left and two on your right"), negations ("avoid the right side"),
contrasts and word order. "Left" is seen from the start, facing the goal (smaller x on the
table).

The sentences people write are not here: the validation and test phrasings are files under
``envs/phrasings/`` (``<task>_val.tsv``, ``<task>_test.tsv``, ``off_task_*.tsv``), written
apart from this grammar. The validation files are for choices; the test files for nothing but
the final measurement (a test set whose results were read joins validation, and a new one is
written blind).
"""

from __future__ import annotations

import colorsys
import functools
import re

import numpy as np

from envs.reach_around import _gap_letters, make_layout, mode_to_gaps

TASKS = ("reach_around", "reach_around_maze", "pick")
OTHER = {"left": "right", "right": "left"}

# fmt: off
_POLITE_HEAD = (
    "", "", "", "", "please ", "now ", "ok, ", "robot, ", "could you ", "can you ",
    "i want you to ", "i'd like you to ", "try to ", "make sure to ", "you should ",
    "go ahead and ", "next, ",
)
_POLITE_TAIL = ("", "", "", "", " please", " now", ", thanks", " carefully", " for me")


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _fill(rng: np.random.Generator, template: str, slots: dict) -> str:
    """Fill each {slot} of `template` with a random option of slots[slot]."""
    return template.format(
        **{k: _pick(rng, v) for k, v in slots.items() if "{" + k + "}" in template}
    )


def _wrap(rng: np.random.Generator, core: str, before: str = "") -> str:
    """`before` + `core` with a polite head (only before a verb) and tail, in single spaces."""
    head = _pick(rng, _POLITE_HEAD) if core.split()[0] in _VERB_STARTS else ""
    text = " ".join((before + head + core + _pick(rng, _POLITE_TAIL)).split())
    if rng.random() < 0.5:  # as typed: a capital and a full stop
        text = text[0].upper() + text[1:] + _pick(rng, (".", ".", "!"))
    return text


# ---- reach_around: one pillar, pass it on the left or on the right -------------------------

_OBST = (
    "obstacle", "pillar", "post", "cylinder", "column", "pole", "obstruction", "barrier", "tower",
    "peg", "object in the way", "thing in the middle", "round thing", "blocker", "stump", "rod",
)
_GO = (
    "go", "move", "pass", "head", "travel", "steer", "navigate", "swing", "curve", "drive", "get",
    "make your way", "work your way", "slide", "veer", "detour", "bend", "loop", "run", "walk",
    "swerve", "deviate", "divert", "sidestep", "weave", "cut", "edge", "proceed", "come",
)
_AROUND = ("around", "past", "by", "round", "alongside")
_ROUTE = ("route", "way", "path", "side", "lane", "track", "option", "detour", "course")
_GOAL = ("goal", "target", "destination", "end point", "green disc", "marker", "finish")
_SIDE = {  # sailors' words and initials too: "keep the post to port", "go R around it"
    "left": ("left", "left", "left", "left-hand", "left-hand", "port", "L"),
    "right": ("right", "right", "right", "right-hand", "right-hand", "starboard", "R"),
}
_WHOSE = ("your", "your", "the gripper's", "the arm's", "the robot's", "the hand's")
_FLANK = ("side", "flank", "edge", "half")
_BEFORE = (  # clauses that say nothing about the side, so no template owns them
    "",
    "",
    "",
    "",
    "",
    "reach straight ahead, but ",
    "on your way to the {goal}, ",
    "moving forward, ",
    "from the start, ",
    "as you head to the {goal}, ",
    "when you reach the {obst}, ",
    "first, ",
    "to get to the {goal}, ",
    "carefully, ",
    "this time ",
    "step one: approach the {obst}. then ",
)
_AFTER = (
    "", "", "", "", "", " then stop at the {goal}", " and halt at the {goal}",
    " to reach the {goal}", " and continue to the {goal}", " as you move to the {goal}",
    " on the way", " and finish", " as you pass it", " as it goes by", " and end at the {goal}",
    " without touching it", " and then go straight", ", then carry on", " to avoid it",
    " to get around it", " to clear it",
)
_TURN = {"left": ("clockwise",), "right": ("counterclockwise", "anticlockwise")}

_RA_POSITIVE = (  # {s}: the side the path takes
    "{go} {around} the {obst} on the {s}",
    "{go} {around} the {obst} on its {s} side",
    "{go} {s} of the {obst}",
    "{go} to the {s} of the {obst}",
    "{go} {s} around the {obst}",
    "{go} on the {s} side",
    "{go} {s}",
    "take the {s} {route}",
    "take the {route} on the {s}",
    "the {s} {route}",
    "{s} {route}",
    "{s}",
    "{s} side of the {obst}",
    "stay on the {s} of the {obst}",
    "keep to the {s}",
    "keep {s} of the {obst}",
    "hug the {s} side of the {obst}",
    "pass the {obst} on the {s}",
    "pass the {obst} on its {s}",
    "reach the {goal} by going {s} of the {obst}",
    "get to the {goal} via the {s} side",
    "{go} to the {goal}, passing {s} of the {obst}",
    "on the way to the {goal}, {go} {s} of the {obst}",
    "circle the {obst} from the {s}",
    "{go} by way of the {obst}'s {s} side",
    "{go} along the {obst}'s {s} {flank}",
    "slip past the {obst}'s {s} {flank}",
    "dodge the {obst} on the {s}",
    "dodge the {obst} by going {s}",
    "clear the {obst} on its {s}",
    "bypass the {obst} on its {s} side",
    "skirt the {obst} to the {s}",
    "{go} {s}, around the {obst}",
    "send the arm {s} of the {obst}",
    "{go} past the {obst}, staying {s}",
    "{go} {turn} around the {obst}",
    "{go} to your {s}",
    "{go} to {whose} {s} to clear the {obst}",
    "{go} out to the {s} of the {obst} to get around it",
    "avoid the {obst} by going {s}",
    "avoid the {obst} by veering to the {s}",
    "avoid the {obst} by moving over to the {s}",
    "{go} {s} to avoid the {obst}",
    "{go} to your {s} to avoid the {obst}",
    "the {obst} is in the way, so {go} to the {s} of it",
    "the way around the {s} of the {obst} is the one i want",
    "the {s} {route} is the one i'd like",
    "keep your path to the {s} of the {obst}",
    "{go} {s} around it",
    "round the {obst} {turn}",
)
_RA_INVERTED = (  # {o}: the side the obstacle stays on, opposite to the path
    "keep the {obst} on your {o}",
    "keep the {obst} to your {o}",
    "leave the {obst} on your {o}",
    "leave the {obst} to your {o}",
    "with the {obst} on your {o}, {go} to the {goal}",
    "have the {obst} on your {o} side",
    "the {obst} should stay on your {o}",
    "{go} so that the {obst} is on your {o}",
    "{go} {around} with the {obst} at your {o}",
    "keep the {obst} at your {o} hand",
    "{go} past, the {obst} on your {o}",
    "{go} with the {obst} staying on {whose} {o}",
    "keep the {obst} on {whose} {o}",
    "the {obst} should end up on {whose} {o}",
    "make sure the {obst} is to {whose} {o}",
    "{go} past the {obst} with it on {whose} {o} side",
    "the {obst} must be on {whose} {o}",
    "with the {obst} at your {o} shoulder, {go} past it",
    "{go} past the {obst} so it stays to your {o}",
)
_RA_NEGATED = (  # {o}: the side not to take
    "don't go {o}",
    "do not take the {o} {route}",
    "avoid the {o} side",
    "avoid the {o} side of the {obst}",
    "avoid going {o}",
    "not {o}",
    "never pass {o} of the {obst}",
    "stay off the {o} side",
    "don't go around the {obst} on the {o}",
    "anything but the {o} {route}",
    "no {o} {route}",
    "do not {go} {o} of the {obst}",
    "skip the {o} {route}",
    "the {o} {route} is blocked",
    "without crossing to the {o} of the {obst}",
    "never cross to the {o} of the {obst}",
    "keep away from the {o} side of the {obst}",
    "stay clear of the {o}",
    "don't pass on the {o}",
    "whatever you do, not the {o}",
)
_RA_CONTRAST = (
    "not {o}, {s}", "{s}, not {o}", "not the {o} {route}, the {s} one", "{go} {s} instead of {o}",
    "don't let the {obst} end up on your {s}, keep it on your {o}",
    "you go {s}, the {obst} stays {o}", "the {obst} stays on your {o} and you go {s}",
    "keep {s} of the {obst}, don't cut across on the {o}",
    "rather {s} than {o}", "take the {s} {route}, not the {o} one", "don't go {o}, go {s}",
    "the {s} of the {obst} rather than the {o}", "avoid the {o}; pass the {obst} on the {s}",
    "no {o} {route}: {go} {around} the {obst} on the {s}", "stay off the {o}, {go} {s}",
    "{go} {around} the {obst} on the {s}, not the {o}",
)


def _reach_around(mode: int, rng: np.random.Generator) -> str:
    s = ("left", "right")[mode]
    o = OTHER[s]
    kind = rng.choice(4, p=[0.5, 0.2, 0.15, 0.15])
    template = _pick(rng, (_RA_POSITIVE, _RA_INVERTED, _RA_NEGATED, _RA_CONTRAST)[kind])
    slots = {
        "obst": _OBST,
        "go": _GO,
        "around": _AROUND,
        "route": _ROUTE,
        "goal": _GOAL,
        "s": _SIDE[s],
        "o": _SIDE[o],
        "turn": _TURN[s],
        "whose": _WHOSE,
        "flank": _FLANK,
    }
    before = _fill(rng, _pick(rng, _BEFORE), slots)
    return _wrap(rng, _fill(rng, template + _pick(rng, _AFTER), slots), before)


# ---- pick: the red or the blue cube --------------------------------------------------------

_COLOUR = {
    "red": (
        "red", "red", "red", "reddish", "ruby", "cherry-red", "brick-red", "rose-red",
        "red-coloured", "maroon", "burgundy", "wine-red", "blood-red", "fire-engine red",
        "rust-red", "cardinal red", "bright red", "dark red", "deep red", "light red",
        "crimson", "scarlet", "vermilion", "carmine", "tomato-red", "cherry", "ruby-red",
        "rojo", "rouge", "rosso", "rot", "vermelho", "roja",  # in other languages
    ),
    "blue": (
        "blue", "blue", "blue", "bluish", "cobalt", "sapphire", "sky-blue", "royal blue",
        "blue-coloured", "ultramarine", "indigo", "steel-blue", "ice-blue", "baby-blue",
        "midnight-blue", "electric blue", "powder-blue", "cornflower blue", "bright blue",
        "dark blue", "deep blue", "light blue", "navy", "azure", "cerulean", "denim-blue",
        "ocean-blue", "navy blue", "sea-blue",
        "azul", "bleu", "blu", "blau", "bleue",  # in other languages
    ),
}
_COLOUR_OF = {  # "the cube the colour of ..."
    "red": (
        "blood", "a fire engine", "a strawberry", "a cherry", "a rose", "lipstick", "rubies",
        "a red apple", "a poppy", "flames", "a tomato", "a stop sign", "a ladybird", "ketchup",
        "a post box", "a fire truck", "a ladybug", "a cooked lobster", "a chili pepper",
        "a raspberry", "cranberries", "the planet mars", "a cardinal bird", "santa's coat",
        "a london bus", "a fire hydrant", "a red traffic light", "a valentine heart", "a radish",
        "a coca-cola can", "a ripe tomato", "a british postbox",
    ),
    "blue": (
        "the sky", "a blueberry", "a sapphire", "a bluebird", "forget-me-nots", "cornflowers",
        "a clear summer sky", "blue ink", "a swimming pool", "the blue on a flag", "the ocean",
        "denim jeans", "the deep sea", "a police light", "a smurf", "cookie monster",
        "the facebook logo", "a blue whale", "a blue jay", "lapis lazuli", "a cloudless sky",
        "a police uniform", "a bluebell", "sonic the hedgehog", "a glacier lake", "the sea",
        "a blue morpho butterfly",
    ),
}
_NOT_RED_OR_BLUE = re.compile(
    r"brown|pink|orange|purpl|violet|magenta|salmon|coral|peach|green|teal|gr[ae]y|turquoise|"
    r"aqua|lavender|lilac|mauve|tan|olive|yellow|shit|puke|vomit|booger|poop"
)


@functools.cache
def _survey_colours() -> dict[str, tuple[str, ...]]:
    """Names from the xkcd colour survey (matplotlib's table of 949 names people gave to RGB
    colours) that name red or blue: their RGB is saturated (HLS saturation >= 0.45, lightness
    0.2-0.75), its hue is red (350-8 degrees, lightness <= 0.6: no pinks) or blue (205-240
    degrees), and the name has none of the words of `_NOT_RED_OR_BLUE`. A reproducible colour
    vocabulary next to the hand-written one."""
    from matplotlib.colors import XKCD_COLORS, to_rgb

    out: dict[str, list[str]] = {"red": [], "blue": []}
    for key, rgb in sorted(XKCD_COLORS.items()):
        name = key.removeprefix("xkcd:")
        h, light, sat = colorsys.rgb_to_hls(*to_rgb(rgb))
        if sat < 0.45 or not 0.2 <= light <= 0.75 or _NOT_RED_OR_BLUE.search(name):
            continue
        if (h * 360 >= 350 or h * 360 <= 8) and light <= 0.6 and "blue" not in name:
            out["red"].append(name)
        elif 205 <= h * 360 <= 240 and "red" not in name:
            out["blue"].append(name)
    return {c: tuple(names) for c, names in out.items()}


@functools.cache
def _colour_words(c: str) -> tuple[str, ...]:
    """Words naming colour `c`: the hand-written list (twice: the commonest words stay common)
    and the survey's names."""
    return _COLOUR[c] * 2 + _survey_colours()[c]


_SIZE = ("", "", "", "", "little ", "small ", "tiny ", "square ", "plastic ", "wooden ")
_CUBE = ("cube", "block", "box", "brick", "piece", "one", "object", "square", "item", "thing")
_LIFT = (
    "pick up", "lift", "grab", "raise", "take", "get", "grasp", "pick", "fetch", "collect",
    "hold up", "bring up", "lift up", "seize", "snatch", "grip", "take hold of",
)
_PICK_POSITIVE = (
    "{lift} the {size}{c} {cube}", "{lift} the {cube} the colour of {like}",
    "{lift} the {cube} that looks like {like}", "{lift} the one coloured like {like}",
    "{lift} the {c} {cube} off the table", "{lift} the {cube} that is {c}", "the {c} {cube}",
    "{c} {cube}", "{c}", "{c} one, please", "go for the {c} {cube}", "i want the {c} {cube}",
    "reach for the {c} {cube} and {lift} it", "grab the {c} {cube} and raise it",
    "{lift} the {cube} coloured {c}", "your target is the {c} {cube}",
    "{lift} the {c} {cube} and {lift} it", "{lift} the {c} {cube} into the air",
    "{lift} the {c} {cube} up high", "close the gripper on the {c} {cube} and lift",
    "get a grip on the {c} {cube}", "the {c} {cube}, lift it", "{c} {cube} pls",
    "{lift} the {c} {cube} pls", "{lift} the {c} {cube} up off the table",
)
_PICK_NEGATED = (  # {oc}: the other colour
    "not the {oc} {cube}, the {c} one",
    "{lift} the {c} {cube}, not the {oc} one",
    "leave the {oc} {cube} alone and {lift} the other one",
    "don't touch the {oc} {cube}, {lift} the other",
    "ignore the {oc} {cube}",
    "anything but the {oc} {cube}",
    "the one that isn't {oc}",
    "{lift} the {cube} that is not {oc}",
    "{lift} the {c} {cube} and leave the {oc} one",
    "leave the {oc} one, {lift} the {c} {cube}",
    "{lift} the {c} one, not the {oc} one",
    "the {oc} {cube} stays, {lift} the {c} one",
    "not {oc}: {c}",
    "{lift} the {c} one instead of the {oc} one",
    "don't {lift} the {oc} {cube}; {lift} the {c} one instead",
    "{lift} the {c} {cube} and leave the {oc} {cube} where it is",
    "the {c} {cube}, not the {oc}",
    "not the {oc} {cube} but the {c} {cube}",
)


def colour_names(c: str) -> tuple[str, ...]:
    """Every word and comparison the Pick grammar names colour `c` ("red" or "blue") with."""
    return tuple(dict.fromkeys(_colour_words(c) + _COLOUR_OF[c]))


def _pick_cube(mode: int, rng: np.random.Generator) -> str:
    c = ("red", "blue")[mode]
    oc = "blue" if c == "red" else "red"
    template = _pick(rng, _PICK_NEGATED if rng.random() < 0.2 else _PICK_POSITIVE)
    slots = {
        "lift": _LIFT,
        "cube": _CUBE,
        "c": _colour_words(c),
        "oc": _colour_words(oc),
        "like": _COLOUR_OF[c],
        "size": _SIZE,
    }
    return _wrap(rng, _fill(rng, template, slots))


# ---- reach_around_maze: one gap per row of posts ------------------------------------------

_ROW_REF = (  # per row: how the row is named
    (
        "first row", "first post", "single post", "nearest post", "row one", "first obstacle",
        "lone post", "opening post", "row 1", "lone one", "first pole",
    ),
    (
        "second row", "pair of posts", "two posts", "middle row", "row two", "next row",
        "second pair", "row 2", "pair", "two", "duo",
    ),
    (
        "third row", "last row", "three posts", "far row", "row three", "final row", "row of three",
        "row 3", "trio", "three", "last three posts",
    ),
)
_GAP = {  # gap letter -> phrases with {r} the row's name
    "L": (
        "left of the {r}", "to the left of the {r}", "on the left of the {r}",
        "around the left end of the {r}", "past the {r} on the left", "left at the {r}",
        "along the left edge at the {r}", "left of every post in the {r}", "far left at the {r}",
        "at the {r}, go left", "the {r}: pass it on the left", "wide left around the {r}",
        "L of the {r}",
    ),
    "R": (
        "right of the {r}", "to the right of the {r}", "on the right of the {r}",
        "around the right end of the {r}", "past the {r} on the right", "right at the {r}",
        "along the right edge at the {r}", "right of every post in the {r}",
        "far right at the {r}", "past the right end of the {r}",
        "at the {r}, go right", "the {r}: pass it on the right", "wide right around the {r}",
        "R of the {r}",
    ),
    "M": (
        "between the {r}", "through the middle of the {r}", "through the gap in the {r}",
        "thread the {r}", "through the {r}", "the gap between the {r}",
        "down the centre at the {r}", "through the opening of the {r}", "middle at the {r}",
        "split the {r}", "squeeze between the {r}", "straight through the {r}",
        "between both posts of the {r}",
    ),
    "M1": (
        "between the first and second posts of the {r}", "through the left gap of the {r}",
        "between the left and centre posts of the {r}", "through the left-middle gap at the {r}",
        "through the gap left of centre in the {r}", "inner left at the {r}",
        "between posts one and two of the {r}", "between the leftmost and middle of the {r}",
        "through the first gap from the left in the {r}",
        "between the leftmost and middle posts of the {r}",
        "just left of the middle post of the {r}",
        "through the leftmost gap of the {r}", "left of the centre post of the {r}",
        "through the gap just left of the middle post at the {r}",
    ),
    "M2": (
        "between the second and third posts of the {r}", "through the right gap of the {r}",
        "between the centre and right posts of the {r}", "through the right-middle gap at the {r}",
        "through the gap right of centre in the {r}", "inner right at the {r}",
        "between posts two and three of the {r}", "between the middle and rightmost of the {r}",
        "through the second gap from the left in the {r}",
        "between the middle and right posts of the {r}",
        "just right of the middle post of the {r}",
        "through the rightmost gap of the {r}", "right of the centre post of the {r}",
        "through the gap just right of the middle post at the {r}",
    ),
}
_SHORT = {  # a row's choice without naming the row, for "row 1: left. row 2: ..." lists
    "L": ("left", "left side", "go left", "keep left", "pass on the left", "L", "far left"),
    "R": ("right", "right side", "go right", "keep right", "pass on the right", "R", "far right"),
    "M": ("middle", "between them", "through the gap", "centre", "between the two"),
    "M1": (
        "left gap", "between posts one and two", "between the first and second from the left",
        "inner left gap", "left-of-centre gap",
    ),
    "M2": (
        "right gap", "between posts two and three", "between the second and third from the left",
        "inner right gap", "right-of-centre gap",
    ),
}
_TWO_ROWS = (  # {s} of both of the first / of the last two rows
    ("take the {s} side of the first two rows", "keep {s} past the lone post and the pair",
     "stay {s} of the first two rows", "go {s} at rows one and two",),
    ("keep to the far {s} of the remaining two rows", "{s} of every post in rows two and three",
     "go {s} at rows two and three", "stay {s} of the pair and of the three posts",
     "{s} of everything after that"),
)
_ROW_LABEL = (
    ("row 1", "row one", "first row", "1st row", "1)", "the single post", "the first post", "r1"),
    ("row 2", "row two", "second row", "2nd row", "2)", "the pair", "the two posts", "r2"),
    ("row 3", "row three", "third row", "3rd row", "3)", "the three posts", "the last row", "r3"),
)
_QUANT = {  # rows 2 and 3: all their posts at once ("left of both"), words that name the row
    1: ("both", "both posts", "both of them", "the two of them", "both posts of the pair"),
    2: ("all three", "all three posts", "every one of the three", "all three of them"),
}
_QUANT_SIDE = (  # {s} the side the path takes of every post in a row, {q} the row's posts
    "{s} of {q}", "pass {q} on the {s}", "go {s} of {q}", "around {q} on the {s}",
    "keep {s} of {q}", "{s} of {q} at the {r}", "go {s} of {q} in the {r}",
)
_NOT_ROW1 = (  # {o}: the side of the single post not to take (two choices: this decides)
    "don't go {o} of the {r}", "avoid the {o} side of the {r}", "not {o} of the {r}",
    "don't pass the {r} on its {o}", "stay off the {o} of the {r}",
)
_ALL_KEEP = (  # every post of every row on your {o}: the path is on the other side
    "keep every post on your {o}", "every post should end up on your {o}",
    "all the posts on your {o}", "leave every post to your {o}",
    "every post in every row on your {o}",
)
_ALL_NOT = (  # never the side {o}
    "don't pass {o} of any post", "never go {o} of a post", "no {o} turns at any row",
    "avoid the {o} side of every row",
)
_ALL_SIDE = (
    "stay {s} of everything", "keep to the far {s} of every row", "{s} of every post",
    "{s} all the way", "go {s} at every row", "hug the {s} edge the whole way",
    "pass every post on the {s}",
)
_COUNT = {1: ("one post", "one"), 2: ("two posts", "two")}  # posts on one side of a gap
_KEEP_ALL = (  # {q} "both" / "all three" posts of the row {r}, all on your {o}
    "{q} of the {r} on your {o}", "{q} posts of the {r} to your {o}",
    "{q} of the {r} should end up on your {o}", "keep {q} of the {r} on your {o}",
)
_EACH_SIDE = (  # the gap of a pair: one post on each side
    "one of the {r} on each side", "one post of the {r} on each side of you",
    "a post of the {r} on either side",
)
_KEEP_ROW = (  # {r} the row, {o} the side all its posts stay on (the path goes the other way)
    "keep the {r} on your {o}", "the {r} on your {o}", "with the {r} to your {o}",
    "every post of the {r} on your {o}", "leave the {r} on your {o}",
)
_SPLIT_ROW = (  # {r} the row; {a} / {b}: how many of its posts stay on your left / right
    "{a} of the {r} on your left and {b} on your right",
    "at the {r}, {a} on your left and {b} on your right",
    "with {b} of the {r} on your right and {a} on your left",
    "leave {a} of the {r} to your left and {b} to your right",
)
_MAZE_FRAMES = (
    "{a}, {b}, {c}", "{a}, then {b}, then {c}", "go {a}, then {b}, and finally {c}",
    "first {a}, next {b}, last {c}", "{a}; {b}; {c}", "pass {a}, {b} and {c}",
    "move {a}, after that {b}, then {c}", "navigate {a}, {b}, and {c} to the goal",
)
_MAZE_CODE = ("route {x}", "{x}", "take route {x}", "follow {x}")


def _posts_side(n: int, g: int, r: str, rng: np.random.Generator) -> str:
    """A row's choice told by where its posts stay: gap g of a row of n posts (0 = left of all)
    leaves g posts on your left and n - g on your right ("keep the pair on your right" = left)."""
    o = "right" if g == 0 else "left"
    if g in (0, n) and n > 1 and rng.random() < 0.4:  # "both of the pair on your right"
        q = "both" if n == 2 else "all three"
        return _pick(rng, _KEEP_ALL).format(q=q, r=r, o=o)
    if g in (0, n):
        return _pick(rng, _KEEP_ROW).format(r=r, o=o)
    if n == 2 and rng.random() < 0.3:  # the gap of a pair
        return _pick(rng, _EACH_SIDE).format(r=r)
    a, b = _pick(rng, _COUNT[g]), _pick(rng, _COUNT[n - g])
    return _pick(rng, _SPLIT_ROW).format(r=r, a=a, b=b)


def _short(k: int, letter: str, rng: np.random.Generator) -> str:
    """Row k's choice without naming the row ("left", "between them"); "left of both" for the
    pair's and "right of all three" for the last row's outer gaps."""
    if letter in ("L", "R") and k > 0 and rng.random() < 0.4:
        s = {"L": "left", "R": "right"}[letter]
        return f"{s} of {_pick(rng, _QUANT[k])}"
    return _pick(rng, _SHORT[letter])


def _part(k: int, n: int, g: int, letter: str, rng: np.random.Generator) -> str:
    """Row k's choice (gap g of its n posts, `letter`) as a phrase naming the row."""
    r = _pick(rng, _ROW_REF[k])
    u = rng.random()
    if u < 0.3:
        return _posts_side(n, g, r, rng)
    if letter in ("L", "R") and u < 0.45:
        s = {"L": "left", "R": "right"}[letter]
        if k == 0:  # one post: not the other side says which
            return _pick(rng, _NOT_ROW1).format(o=OTHER[s], r=r)
        return _pick(rng, _QUANT_SIDE).format(s=s, q=_pick(rng, _QUANT[k]), r=r)
    return _pick(rng, _GAP[letter]).format(r=r)


def _maze(mode: int, rng: np.random.Generator) -> str:
    layout = make_layout("maze")
    gaps = mode_to_gaps(mode, layout)
    letters = [_gap_letters(len(row))[g] for row, g in zip(layout["rows"], gaps)]
    u = rng.random()
    if u < 0.08:  # the route's code name, as in the mode names
        return _wrap(rng, _pick(rng, _MAZE_CODE).format(x="-".join(letters)))
    side = {"L": "left", "R": "right"}
    if u < 0.25:  # "row 1: left. row 2: between them. row 3: right gap.", in any order
        sep = _pick(rng, (". ", "; ", ", ", " / "))
        items = [
            f"{_pick(rng, _ROW_LABEL[k])}{_pick(rng, (': ', ' ', ' - '))}{_short(k, x, rng)}"
            for k, x in enumerate(letters)
        ]
        if rng.random() < 0.2:  # each item names its row
            items = [items[i] for i in rng.permutation(3)]
        return _wrap(rng, sep.join(items))
    if len(set(letters)) == 1 and letters[0] in "LR" and u < 0.5:
        s = side[letters[0]]
        v = rng.random()
        if v < 0.5:
            return _wrap(rng, _pick(rng, _ALL_SIDE).format(s=s))
        return _wrap(rng, _pick(rng, _ALL_KEEP if v < 0.75 else _ALL_NOT).format(o=OTHER[s]))
    parts = [
        _part(k, len(row), g, ltr, rng)
        for k, (row, g, ltr) in enumerate(zip(layout["rows"], gaps, letters))
    ]
    if letters[0] == letters[1] in side and rng.random() < 0.3:  # the first two rows at once
        first = _pick(rng, _TWO_ROWS[0]).format(s=side[letters[0]])
        return _wrap(rng, f"{first}, then {parts[2]}")
    if letters[1] == letters[2] in side and rng.random() < 0.3:  # the last two rows at once
        last = _pick(rng, _TWO_ROWS[1]).format(s=side[letters[1]])
        return _wrap(rng, f"{parts[0]}, then {last}")
    if rng.random() < 0.25:  # each part names its row, so any order reads the same
        parts = [parts[i] for i in rng.permutation(3)]
        return _wrap(rng, f"{parts[0]}, {parts[1]}, {parts[2]}")
    return _wrap(rng, _pick(rng, _MAZE_FRAMES).format(a=parts[0], b=parts[1], c=parts[2]))


_VERB_STARTS = {w.split()[0] for w in (*_GO, *_LIFT)} | {
    "take",
    "keep",
    "stay",
    "hug",
    "reach",
    "circle",
    "round",
    "leave",
    "have",
    "avoid",
    "skip",
    "follow",
    "ignore",
    "first",
    "on",
    "with",
}
_GRAMMARS = {"reach_around": _reach_around, "reach_around_maze": _maze, "pick": _pick_cube}
NUM_MODES = {"reach_around": 2, "reach_around_maze": 24, "pick": 2}

# fmt: on


def sample_instruction(task: str, mode: int, rng: np.random.Generator) -> str:
    """A random paraphrase commanding ``mode`` of ``task``."""
    if task not in _GRAMMARS:
        raise ValueError(f"task={task!r} must be one of {sorted(_GRAMMARS)}")
    if not 0 <= mode < NUM_MODES[task]:
        raise ValueError(f"mode={mode} must be in [0, {NUM_MODES[task]}) for task {task!r}")
    return _GRAMMARS[task](mode, rng)


def paraphrases(task: str, mode: int, rng: np.random.Generator, n: int) -> list[str]:
    """Up to ``n`` distinct paraphrases of ``mode`` (in the order drawn)."""
    out: dict[str, None] = {}
    for _ in range(20 * n):
        out.setdefault(sample_instruction(task, mode, rng))
        if len(out) == n:
            break
    return list(out)


# ---- as typed: slips of the keyboard -------------------------------------------------------

_KEYS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR_KEY = {  # letter -> the letters beside it on a QWERTY keyboard (same row and the rows next)
    c: "".join(
        k for rr in range(max(r - 1, 0), min(r + 2, 3)) for k in _KEYS[rr][max(i - 1, 0) : i + 2]
        if k != c
    )
    for r, row in enumerate(_KEYS)
    for i, c in enumerate(row)
}  # fmt: skip


def misspell(text: str, rng: np.random.Generator) -> str:
    """``text`` with one slip in one of its words of four letters or more: a letter dropped,
    doubled, swapped with the next or struck on a neighbouring key ("lefft", "rigth", "pilar").
    A grounding classifier trained on the grammar's spelling alone reads such a line as
    off-task. Words of three letters or fewer ("not", "red") are never touched, the first
    letter of a word never dropped or moved; a text with no such word comes back as it was."""
    words = re.split(r"(\W+)", text)  # words at even indices, separators at odd ones
    long = [i for i in range(0, len(words), 2) if len(words[i]) >= 4 and words[i].isalpha()]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    w, j = words[i], int(rng.integers(1, len(words[i])))  # a letter after the first
    kind = int(rng.integers(4))
    if kind == 0:
        w = w[:j] + w[j + 1 :]
    elif kind == 1:
        w = w[: j + 1] + w[j] + w[j + 1 :]
    elif kind == 2 and j + 1 < len(w):
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    else:
        near = _NEAR_KEY.get(w[j].lower(), w[j])
        w = w[:j] + near[int(rng.integers(len(near)))] + w[j + 1 :]
    words[i] = w
    return "".join(words)


# ---- sentences that command nothing --------------------------------------------------------

# fmt: off
_CHORE_VERB = (
    "make", "bring", "open", "close", "clean", "wash", "fold", "cook", "water", "turn on",
    "turn off", "find", "sort", "paint", "fix", "order", "call", "play", "read", "write", "print",
    "translate", "shut down", "restart", "charge", "feed", "vacuum", "iron", "sing", "buy", "email",
    "measure", "polish", "count", "delete", "draw", "book", "check", "repeat",
)
_CHORE_OBJECT = (
    "me a sandwich", "the door", "the window", "the kitchen", "the dishes", "the laundry", "dinner",
    "the plants", "the lights", "the tv", "my keys", "the mail", "the fence", "the sink", "a pizza",
    "my mother", "some music", "a story", "an email", "the bed", "the report", "this sentence",
    "the dog", "the car", "the battery", "the garden", "a taxi", "the floor", "my shirt",
    "the news", "a song", "the calendar", "the windows", "the files", "your controller",
    "the printer", "the groceries", "the oven", "a poem", "the trash",
)
_CHIT_CHAT = (
    "what time is it", "how are you today", "tell me a joke", "what's the weather like",
    "good morning", "thank you very much", "who built you", "i am bored", "hello there",
    "what is two plus two", "do you like music", "never mind", "hmm", "stop talking",
    "how tall is the eiffel tower", "what should i eat", "the sky is blue today",
    "my cat is asleep", "is it going to rain", "let's take a break",
)
_NEAR_MISS = {
    "reach_around": (
        "jump over the {obst}", "knock the {obst} over", "pick up the {obst}", "go up",
        "go backwards", "stay where you are", "spin in place", "paint the {obst}",
    ),
    "reach_around_maze": (
        "knock down all the posts", "go backwards", "stay where you are", "count the posts",
        "stack the posts", "go up", "spin in place",
    ),
    "pick": (  # {c}: an absent colour; {p}: a present one, with an action other than lifting
        "pick up the {c} cube",
        "lift the {c} block",
        "grab the {c} one",
        "stack the cubes",
        "push both cubes off the table",
        "lift the table",
        "throw the cube",
        "paint the cube",
        "push the {p} cube",
        "stack the {p} cube on the other one",
        "paint the {p} block {c}",
        "throw the {p} cube",
        "knock over the {p} block",
        "roll the {p} cube",
        "kick the {p} one",
        "slide the {p} cube to the edge",
        "what colour is the {p} cube",
        "count the {p} cubes",
    ),
}
_ABSENT_COLOUR = ("green", "yellow", "purple", "orange", "black", "white", "pink", "grey")
# The word that decides the route, replaced by one that decides nothing: "pass the pillar on the
# safe side". A reader must find the deciding word to claim a route; without it the sentence is
# refused, never read one way. (The same for Pick's colours, "lift the plain cube", "the cube the
# colour of grass", made the reader refuse most colours it had not seen: with one reader, on the
# validation set of the time, 0.93 -> 0.75 grounded right.)
_NO_SIDE = (
    "other", "far", "near", "usual", "safe", "correct", "best", "free", "shorter", "quicker",
    "easier", "same", "wrong", "open", "clear", "nearest", "outer", "inner",
)


_SYLLABLES = ("zib", "ble", "fran", "dle", "kor", "mop", "tash", "vee", "lun", "gar", "pim", "rox")

# fmt: on


def _nonsense(rng: np.random.Generator) -> str:
    words = [
        "".join(_pick(rng, _SYLLABLES) for _ in range(int(rng.integers(1, 4))))
        for _ in range(int(rng.integers(1, 6)))
    ]
    return " ".join(words)


# ReachAround's templates that name the side as "the {s} ...", each with a noun after {s}
_NO_SIDE_TEMPLATES = tuple(
    re.sub(r"\{s\}(?! side| \{route\}| \{flank\})", "{s} side", t)
    for t in _RA_POSITIVE
    if "the {s}" in t
)


def _no_evidence(task: str | None, rng: np.random.Generator) -> str:
    """A ReachAround command whose side word is replaced by one that names no side ("" for the
    other tasks)."""
    if task == "reach_around":
        template = _pick(rng, _NO_SIDE_TEMPLATES)
        slots = {
            "go": _GO,
            "around": _AROUND,
            "route": _ROUTE,
            "obst": _OBST,
            "goal": _GOAL,
            "s": _NO_SIDE,
            "flank": _FLANK,
        }
        return _wrap(rng, _fill(rng, template + _pick(rng, _AFTER), slots))
    return ""


def off_task_sentences(task: str | None, rng: np.random.Generator, n: int) -> list[str]:
    """Up to ``n`` distinct sentences commanding no mode of ``task``: chores, chit-chat, nonsense,
    near misses of the task (absent colours, impossible actions), the task's commands with the
    deciding word replaced (`_no_evidence`) and the other tasks' commands (a task not in this
    module, e.g. a user's env, gets the first three kinds only)."""
    nav = {"reach_around", "reach_around_maze"}  # share their words: not off-task for each other
    others = [t for t in _GRAMMARS if task in _GRAMMARS and t != task and not {t, task} <= nav]
    out: dict[str, None] = {}
    for _ in range(20 * n):
        kind = rng.choice(6)
        if kind == 4:
            text = _nonsense(rng)
        elif kind == 0:
            text = f"{_pick(rng, _CHORE_VERB)} {_pick(rng, _CHORE_OBJECT)}"
        elif kind == 1:
            text = _pick(rng, _CHIT_CHAT)
        elif kind == 2:
            slots = {"obst": _OBST, "c": _ABSENT_COLOUR, "p": ("red", "blue")}
            text = _fill(rng, _pick(rng, _NEAR_MISS.get(task, _CHIT_CHAT)), slots)
        elif kind == 5:
            text = _no_evidence(task, rng)
        elif others:
            t = _pick(rng, others)
            text = sample_instruction(t, int(rng.integers(NUM_MODES[t])), rng)
        else:
            text = ""
        if text and kind in (0, 1, 2, 4):  # chores, chit-chat, near misses, nonsense: typed as
            # the commands are (`_wrap`), so a sentence's form says nothing of its label
            text = _wrap(rng, text)
        if text:
            out.setdefault(text)
        if len(out) == n:
            break
    return list(out)
