"""ALFWorld (RL4VLM's fifth task) on alfworld's own rules engine, with games generated offline.

ALFWorld's game files and AI2-THOR's renderer are downloads; the rules engine and what games are
made of ship on PyPI (``pip install 'visact[alfworld]'``). The parts, bottom up:

- :mod:`wheel`: the files the alfworld wheel ships (domain, grammar, tables, goal library, layouts);
- :mod:`rooms`: the 120 THOR rooms' receptacles and floors;
- :mod:`scenes`: a generated game (objects placed, a goal of one of six task types);
- :mod:`problem`: that game as a PDDL problem;
- :mod:`engine`: alfworld's engine (textworld's ``PddlEnv``) loaded with it;
- :mod:`world`, :mod:`text`, :mod:`frame`, :mod:`expert`: the state, the task text, the image
  and the oracle; :mod:`searcher`: the searching demonstrator (reset option ``expert="search"``),
  whose moves read only what the agent observes;
- :mod:`env`: the :class:`~visact.env_server.core.Env` (``env-server --env alfworld``).

Importing this package imports nothing of alfworld or textworld; :mod:`env` does.
"""
