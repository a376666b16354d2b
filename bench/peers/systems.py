"""The systems and configurations of the peers benchmark: names, what each client does, labels."""

from __future__ import annotations

from dataclasses import dataclass

SYSTEMS = {  # label -> how it is shown
    "inprocess": "in-process",
    "floor": "floor: round trip only",
    "visact": "visact",
    "visact_nocache": "visact, PNG caches off",
    "dm_env_rpc": "dm_env_rpc",
    "openenv": "OpenEnv",
    "openenv_nodeflate": "OpenEnv, no deflate",
}
HOW = {  # (system, mode) -> what the client does
    ("inprocess", ""): "env.step + render in the agent's process (the ceiling)",
    ("floor", "wakeup"): "no game, no image: 1 byte to a child process over a pipe and 1 byte back",
    ("floor", "spin"): "no game, no image: a counter in shared memory, both processes busy-waiting",
    ("floor", "spin_game"): "the game in a child process over that shared memory: frames by reference, "
    "new texts only, no protocol, no checks",
    ("floor", "spin_game_bare"): "the same with nothing marshalled: the action as an index, the done flag "
    "back, frame and texts left in the child: the handover alone",
    ("floor", "pipe"): "no game: 1 byte to a child process over a pipe, the frame's bytes back",
    ("floor", "grpc"): "no game: a bare Python gRPC unary call returning the frame's bytes",
    ("floor", "servicer"): "no transport: visact's servicer and client conversions in one process",
    ("visact", ""): "EnvClient.step (unary Step)",
    ("visact", "in_turn"): "EnvClient.step, sessions in turn",
    ("visact", "batch"): "EnvClient.batch: one unary BatchStep per round",
    ("visact", "batch_stream"): "EnvClient.batch: one BatchStepStream message per round",
    (
        "visact_nocache",
        "",
    ): "EnvClient.step; env-server --png-cache 0, client decode cache 0: every frame compressed and decoded",
    ("visact_nocache", "batch"): "EnvClient.batch (unary BatchStep); --png-cache 0, client decode cache 0",
    ("dm_env_rpc", ""): "DmEnvAdaptor.step (dm_env)",
    ("dm_env_rpc", "in_turn"): "DmEnvAdaptor.step, sessions in turn",
    ("dm_env_rpc", "pipelined"): "N streams: write N StepRequests, then read N answers",
    ("openenv", ""): "EnvClient.step (permessage-deflate on: the default)",
    ("openenv", "in_turn"): "EnvClient.step, sessions in turn (deflate on)",
    ("openenv", "concurrent"): "asyncio.gather over N EnvClients (deflate on)",
    ("openenv_nodeflate", ""): "EnvClient.step, server's ws_per_message_deflate=False",
    ("openenv_nodeflate", "in_turn"): "EnvClient.step, sessions in turn (deflate off)",
    ("openenv_nodeflate", "concurrent"): "asyncio.gather over N EnvClients (deflate off)",
}
SHORT = {  # (system, mode) -> the plot's label
    ("inprocess", ""): "in-process (ceiling)",
    ("floor", "wakeup"): "floor: pipe, 1 byte",
    ("floor", "spin"): "floor: shared memory, spin",
    ("floor", "spin_game"): "floor: game over shared memory, spin",
    ("floor", "spin_game_bare"): "floor: game over shared memory, nothing marshalled",
    ("floor", "pipe"): "floor: pipe + frame",
    ("floor", "grpc"): "floor: bare gRPC + frame",
    ("floor", "servicer"): "floor: visact servicer, no transport",
    ("visact", ""): "visact Step",
    ("visact", "in_turn"): "visact Step, in turn",
    ("visact", "batch"): "visact BatchStep",
    ("visact", "batch_stream"): "visact BatchStepStream",
    ("visact_nocache", ""): "visact Step, no PNG cache",
    ("visact_nocache", "batch"): "visact BatchStep, no PNG cache",
    ("dm_env_rpc", ""): "dm_env_rpc",
    ("dm_env_rpc", "in_turn"): "dm_env_rpc, in turn",
    ("dm_env_rpc", "pipelined"): "dm_env_rpc pipelined",
    ("openenv", ""): "OpenEnv",
    ("openenv", "in_turn"): "OpenEnv, in turn",
    ("openenv", "concurrent"): "OpenEnv gather",
    ("openenv_nodeflate", ""): "OpenEnv no deflate",
    ("openenv_nodeflate", "in_turn"): "OpenEnv no deflate, in turn",
    ("openenv_nodeflate", "concurrent"): "OpenEnv no deflate, gather",
}
NOT_COMPARED = ("inprocess", "floor")  # the ceiling and the bounds: no group or goal of their own
PEER_FAMILIES = {"dm_env_rpc": ("dm_env_rpc",), "OpenEnv": ("openenv", "openenv_nodeflate")}


@dataclass(frozen=True)
class Config:
    name: str
    system: str
    sessions: int
    encoding: str
    mode: str

    @staticmethod
    def parse(name: str, system: str) -> Config:
        sessions, encoding, *mode = name[len(system) + 1 :].split("_", 2)
        return Config(name, system, int(sessions), encoding, mode[0] if mode else "")

    @property
    def how(self) -> str:
        return HOW[(self.system, self.mode)].replace("N ", f"{self.sessions} ")
