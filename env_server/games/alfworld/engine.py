"""alfworld's rules engine: textworld's PDDL environment, loaded with a generated game.

``textworld.envs.pddl.PddlEnv`` plays ALFWorld's ``game.tw-pddl`` games: fast-downward's
translator turns the domain and the problem into a SAS task, ``libdownward`` applies actions and
lists the applicable ones, and textworld's grammar (alfworld's ``alfred.twl2``) words every
command and feedback sentence. :class:`AlfredPddlEnv` is that class with changes for speed,
none to the rules (a unit test plays both side by side and compares every text):

- the problem is translated once per game (textworld translates it twice on ``load`` and twice
  again on ``reset``: the second, optimised translation only feeds its planner, unused here),
  and translations are cached (:mod:`translations`);
- the grammar is parsed once per process (it is the same for every game); the goal line of the
  intro, "Your task is to: UNKNOWN GOAL.", gets the game's sentence as alfworld's own
  ``add_task_to_grammar`` does, on the derived text instead of on the grammar;
- the words of each command and each room's intro are derived once per process (see
  ``CommandMemoGrammar`` and ``load_translated``);
- engines (each with its own copy of ``libdownward``) are reused from game to game and session
  to session (:func:`acquire_engine`).

Entities are named as ALFWorld's demangler names them ("cabinet 3", "apple 1"). Nothing here is
thread-safe: the translator sets module-level options, ``sys.argv`` and ``sys.stdout``, and
textworld parses templates and queries with module-level tatsu parsers. One process-wide lock
serialises every translation, reset and step (``translations.LOCK``; the GIL serialises this
Python work anyway).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from visact.env_server.games.alfworld import wheel
from visact.env_server.games.alfworld.translations import LOCK, Translation

_POOL_LOCK = threading.Lock()
_POOL: list[Any] = []
#: Each room's intro, with the goal line still "UNKNOWN GOAL" (120 rooms at most).
_INTROS: dict[str, str] = {}
GOAL_PLACEHOLDER = "UNKNOWN GOAL"
#: Worded commands kept (bounded by the ids of the rooms and objects; cleared when full).
COMMAND_CACHE_SIZE = 200_000
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=1)
def game_logic() -> Any:
    """alfworld's domain and grammar, parsed once (textworld's ``GameLogic``), commands memoised."""
    from textworld.envs.pddl import logic

    parsed = logic.GameLogic(domain=wheel.domain_text(), grammar=wheel.grammar_text())
    templates = {action.template for action in parsed.actions.values()}
    parsed.grammar = _command_grammar_class()(parsed.grammar, templates)
    return parsed


@lru_cache(maxsize=1)
def _command_grammar_class() -> type:
    from textworld.envs.pddl.textgen import ContextSensitiveGrammar

    class CommandMemoGrammar(ContextSensitiveGrammar):
        """textworld's grammar, remembering how each command template words each action.

        textworld words every applicable action's command on every step by deriving its template
        (parsing it and its queries with tatsu each time): most of a step's time. A command's words
        depend only on the arguments its template names (``{o}``, ``{r}``; ``lend`` in "go to
        [{r.name | receptacleatlocation(r:receptacle, lend:location)}]"), their names, and which
        receptacle stands at a location; in the games made here a PDDL id always has the same name
        and each receptacle its own fixed location, so the words for (template, those arguments)
        never change and are derived once per process. Feedback sentences, which read the state,
        are derived as before.
        """

        def __init__(self, parsed: Any, templates: set[str]) -> None:
            self._rules = parsed._rules
            #: each template's words: the placeholders its derivation can read are among them
            self._mentions = {template: frozenset(WORD.findall(template)) for template in templates}
            self._commands: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

        def derive(self, start: str, context: Any = None) -> str:
            context = context or {}
            mentions = self._mentions.get(start)
            if mentions is None:
                return str(super().derive(start, context))
            arguments = ((ph.name, var.name) for ph, var in context["mapping"].items() if ph.name in mentions)
            key = (start, tuple(sorted(arguments)))
            words = self._commands.get(key)
            if words is None:
                words = str(super().derive(start, context))
                if len(self._commands) >= COMMAND_CACHE_SIZE:
                    self._commands.clear()
                self._commands[key] = words
            return words

    return CommandMemoGrammar


def _state_class() -> type:
    from textworld.envs.pddl.logic import PddlState

    return _make_state_class(PddlState)


@lru_cache(maxsize=1)
def _make_state_class(base: type) -> type:
    import textworld.logic
    from textworld.envs.pddl.logic import Atom
    from textworld.logic import Proposition, Variable

    class TranslatedState(base):
        """textworld's ``PddlState`` built from a translation made beforehand (no planner task)."""

        def __init__(self, downward_lib: Any, translation: Translation, logic: Any) -> None:
            # the fields textworld.logic.State.__init__ sets (it rejects the PDDL GameLogic, so
            # textworld's PddlState sets them itself too)
            self._facts: defaultdict[Any, set[Any]] = defaultdict(set)
            self._vars_by_name: dict[str, Any] = {}
            self._vars_by_type: defaultdict[str, set[Any]] = defaultdict(set)
            self._var_counts: Counter[str] = Counter()
            self._logic = logic
            self.downward_lib = downward_lib
            self.pddl_problem = ""
            self.sas = translation.sas
            self._actions = {
                name: ActionSchema(name, [Parameter(p, t) for p, t in parameters])
                for name, parameters in translation.actions
            }
            for name, supertypes in translation.types:
                with contextlib.suppress(ValueError):  # already known from an earlier game
                    logic.types.add(textworld.logic.Type(name, list(supertypes)))
            downward_lib.load_sas(self.sas.encode("utf-8"))
            self.name2type = dict(translation.objects)
            self.add_facts(
                Proposition(predicate, [Variable(arg, self.name2type[arg]) for arg in arguments])
                for predicate, arguments in translation.facts
            )
            atoms = (Atom * downward_lib.get_state_size())()
            downward_lib.get_state(atoms)
            facts = (atom.get_fact(self.name2type) for atom in atoms)
            self.add_facts(fact for fact in facts if not fact.is_negation)

        def replan(self, infos: Any) -> list[str]:
            raise NotImplementedError("this state was loaded without a planner task")

    return TranslatedState


class Parameter(NamedTuple):
    """An action schema's parameter, as textworld's PddlState reads it."""

    name: str
    type_name: str


class ActionSchema(NamedTuple):
    name: str
    parameters: list[Parameter]


def _env_class() -> type:
    from textworld.envs.pddl import PddlEnv

    return _make_env_class(PddlEnv)


@lru_cache(maxsize=1)
def _make_env_class(base: type) -> type:
    from textworld.core import EnvInfos, GameState

    class AlfredPddlEnv(base):
        """textworld's ``PddlEnv`` that loads a translated game and names entities as ALFWorld does."""

        def __init__(self) -> None:
            super().__init__(EnvInfos(admissible_commands=True, won=True))
            self._translation: Translation | None = None
            self._names: Mapping[str, str] = {}
            self._sentence = ""
            self._room = ""

        def load_translated(
            self, translation: Translation, names: Mapping[str, str], sentence: str, room: str = ""
        ) -> None:
            """Use this game from the next ``reset`` on; ``names`` maps PDDL ids to names.

            ``room`` names the layout: the intro (the receptacles seen from the middle of the room)
            is then derived once per room. Only for games whose start depends on nothing else,
            as here: the agent starts where no receptacle stands, and receptacles never move.
            """
            self._game_file = None
            self._game_data: dict[str, str] = {}
            self.walkthrough = None
            self._logic = game_logic()
            self._translation, self._names, self._sentence = translation, names, sentence
            self._room = room

        def step(self, command: str) -> tuple[GameState, float, bool]:
            with LOCK:
                return super().step(command)

        def reset(self) -> GameState:
            with LOCK:
                return self._reset()

        def _reset(self) -> GameState:
            assert self._translation is not None, "load_translated before reset"
            self._pddl_state = _state_class()(self.downward_lib, self._translation, self._logic)
            self._entity_infos = self._get_entity_infos()
            for pddl_id, info in self._entity_infos.items():
                info.name = self._names.get(pddl_id, pddl_id)
            self.prev_state = None
            self.state = GameState()
            self._last_action = None
            self._moves = 0
            context = {
                "state": self._pddl_state,
                "facts": list(self._pddl_state.facts),
                "variables": {},
                "mapping": {},
                "entity_infos": self._entity_infos,
            }
            intro = _INTROS.get(self._room) if self._room else None
            if intro is None:
                intro = self._logic.grammar.derive("#intro#", context)
                if self._room:
                    _INTROS[self._room] = intro
            self.state.feedback = self.state.raw = intro.replace(GOAL_PLACEHOLDER, self._sentence)
            self._gather_infos()
            return self.state

        def current_facts(self) -> list[tuple[str, tuple[str, ...]]]:
            """Every fact true now, as (predicate, argument ids), ids in lower case as translated."""
            return [(fact.name, tuple(v.name for v in fact.arguments)) for fact in self._pddl_state.facts]

    return AlfredPddlEnv


def acquire_engine() -> Any:
    """An engine for one session: a released one, or a new one with its own copy of libdownward.

    Engines are reused rather than unloaded: once two copies of libdownward were loaded, unloading
    them (``fast_downward.close_lib``) crashes the process at exit (their plugin registries
    share C++ unique symbols). So a process holds as many engines as it ever ran games at once.
    """
    with _POOL_LOCK:
        if _POOL:
            return _POOL.pop()
    return _env_class()()


def release_engine(engine: Any) -> None:
    """Give an engine back for the next session."""
    with _POOL_LOCK:
        _POOL.append(engine)
