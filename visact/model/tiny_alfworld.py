"""``--model tiny-alfworld``: the tiny VLM grown for ALFWorld, an opt-in variant of ``tiny``.

What ALFWorld asks of the default tiny model (docs/alfworld.md, "For the learning phase"):
prompts of ~600 tokens (up to ~1,700) and answers of ~150 with its card-game merges, and at its
64 px no label of the 300x300 frame is legible. This variant changes three things and keeps the
rest of ``tiny`` (``visact.model.tiny_vlm``, which holds its ``ALFWORLD_SPEC``) as it is; this
file is the data its merges are learned over:

- **images of 128 px** in 16 px patches (64 image tokens): the frame's names mostly read at
  that size (at 64 px only its colours and layout do);
- **merges learned over ALFWorld's phrases** (:func:`alfworld_corpus`: RL4VLM's prompt, the
  engine's feedback sentences, every command form with every object and receptacle name the
  games use, the expert's thoughts and the answer format), 1,024 of them, so a command such as
  ``take soapbar 1 from countertop 1`` is a few tokens;
- the text model keeps 4 layers of 128 (head dim 32, one of the sizes vLLM's CPU engine takes).

The corpus is data in this file, not read from the alfworld wheel: the build needs no
environment installed and gives the same bytes everywhere. Names the games use but this list
lacks still tokenize (byte fallback), only longer.
"""

from __future__ import annotations

from functools import cache

#: Object types of the generated games (alfworld's names, lower case, as the engine writes them).
OBJECTS: tuple[str, ...] = (
    "alarmclock", "apple", "baseballbat", "basketball", "book", "bowl", "box", "bread", "butterknife",
    "candle", "cd", "cellphone", "cloth", "creditcard", "cup", "desklamp", "dishsponge", "egg",
    "floorlamp", "fork", "glassbottle", "handtowel", "kettle", "keychain", "knife", "ladle", "laptop",
    "lettuce", "mug", "newspaper", "pan", "pen", "pencil", "peppershaker", "pillow", "plate", "plunger",
    "pot", "potato", "remotecontrol", "saltshaker", "soapbar", "soapbottle", "spatula", "spoon",
    "spraybottle", "statue", "tennisracket", "tissuebox", "toiletpaper", "tomato", "towel", "vase",
    "watch", "wateringcan", "winebottle",
)  # fmt: skip
#: Receptacle types of alfworld's room layouts.
RECEPTACLES: tuple[str, ...] = (
    "armchair", "bathtubbasin", "bed", "cabinet", "cart", "coffeemachine", "coffeetable", "countertop",
    "desk", "diningtable", "drawer", "dresser", "fridge", "garbagecan", "handtowelholder",
    "laundryhamper", "microwave", "ottoman", "safe", "shelf", "sidetable", "sinkbasin", "sofa",
    "stoveburner", "toaster", "toilet", "toiletpaperhanger", "towelholder", "tvstand",
)  # fmt: skip

#: RL4VLM's ALFWorld prompt with the engine's intro, and the answer format agent/prompts.py asks for.
PROMPT_LINES: tuple[tuple[str, int], ...] = (
    (
        "You are an expert in the ALFRED Embodied Environment. You are also given the following text "
        "description of the current scene: -= Welcome to TextWorld, ALFRED! =- You are in the middle of "
        "a room. Looking quickly around you, you see a cabinet, a drawer, and a shelf. Your task is to: "
        "put a hot plate in cabinet. Your task is to put a clean mug in coffeemachine.",
        8,
    ),
    ("Reply with a valid JSON object in exactly this format:", 8),
    (
        '{"facing": "x", "contents": "x", "holding": "x", "thoughts": "{first read the facts off the '
        'image, then think about which action to choose}", "action": "look" or "help" or "inventory"}',
        8,
    ),
    ('{"thoughts": "{think about which action to choose}", "action": "look"}', 2),
    ('{"action": "go to"}', 8),
    ('" or "go to " or "take " or "move " or "examine " or "open " or "close "', 16),
    ("nothing (the middle of the room) unknown (closed) (open) (closed) (hot) (cold) (clean) (on)", 8),
    ("You are facing the. Next to it, you see nothing. You turn on the. Nothing happens.", 2),
    ("You examine the (see the image). You look at what you are carrying (see the image).", 2),
    ("user assistant system", 1),
)

#: The goal library's task sentences (``{o}``: an object, ``{r}``: a receptacle type).
TASKS = (
    "put a {o} in {r}",
    "put some {o} on {r}",
    "put a clean {o} in {r}. clean some {o} and put it in {r}",
    "put a hot {o} in {r}. heat some {o} and put it in {r}",
    "put a cool {o} in {r}. cool some {o} and put it in {r}",
    "find two {o} and put them in {r}. put two {o} in {r}",
    "look at {o} under the desklamp. look at {o} under the floorlamp",
    "examine the {o} with the desklamp. examine the {o} with the floorlamp",
)
#: The engine's feedback sentences about a receptacle ``{r}`` or an object ``{o}`` at ``{r}``.
FEEDBACK = (
    "You arrive at {r}. The {r} is closed.",
    "You open the {r}. The {r} is open.",
    "You close the {r}.",
    "You pick up the {o} from the {r}.",
    "You move the {o} to the {r}.",
    "You heat the {o} using the microwave. You cool the {o} using the fridge.",
    "You clean the {o} using the sinkbasin.",
)
#: The admissible command forms.
COMMANDS = (
    "go to {r}",
    "open {r}",
    "close {r}",
    "examine {r}",
    "take {o} from {r}",
    "move {o} to {r}",
    "heat {o} with microwave",
    "cool {o} with fridge",
    "clean {o} with sinkbasin",
    "use desklamp",
    "use floorlamp",
    "examine {o}",
)
#: The facts of a CoT answer: the names come right after a quote there, not after a space.
FACTS = ('"facing": "{r} 1 (closed)", "contents": "{o} 1 (hot), {o} 2", "holding": "{o} 1 (clean)"',)
#: The expert's thoughts (env_server/games/alfworld/expert.py).
THOUGHTS = (
    "My task is to put a {o} in {r}. There is a {o} in the {r}, so I take it. First I go to the {r}.",
    "I hold the {o}, so I put it in the {r}. The {r} is closed, so I open it.",
    "The {o} is not hot yet, so I heat it with the microwave. The {o} is not cold yet, so I cool it "
    "with the fridge. The {o} is not clean yet, so I clean it with the sinkbasin.",
    "I hold the {o}, which the task does not need, so I put it down in the {r}.",
    "I hold the {o}; I look at it under the desklamp. I look at it under the floorlamp.",
)


@cache
def alfworld_corpus() -> tuple[tuple[str, int], ...]:
    """The merge corpus of ``tiny-alfworld``: fixed lines, then every template with every name
    (each object with the receptacles in turn, so that every pair of types appears)."""
    lines = list(PROMPT_LINES)
    for index, obj in enumerate(OBJECTS):
        receptacle = RECEPTACLES[index % len(RECEPTACLES)]
        for template in (*TASKS, *FEEDBACK, *COMMANDS, *FACTS, *THOUGHTS):
            lines.append((template.format(o=obj, r=receptacle), 2))
    for receptacle in RECEPTACLES:
        for template in (*FEEDBACK, *COMMANDS):
            if "{o}" not in template:
                lines.append((template.format(r=receptacle), 4))
    return tuple(lines)
