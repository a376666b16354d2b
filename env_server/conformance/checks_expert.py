"""Check of the optional expert: its moves are legal, its facts use the declared keys."""

from __future__ import annotations

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.play import check_step
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped


def check_expert(ctx: Context) -> str:
    """With want_expert, each running observation carries a legal expert move, the last none; without, none."""
    if "expert" not in ctx.spec.capabilities:
        raise CheckSkipped("the server does not declare the 'expert' capability")
    spec, seed = ctx.spec, ctx.seed(700)
    with ctx.session() as plain_id:
        if ctx.reset(plain_id, seed).observation.HasField("expert"):
            raise CheckFailed(
                "a session created without want_expert got Observation.expert; expected it unset"
            )
    with ctx.session(want_expert=True) as session_id:
        observation = ctx.reset(session_id, seed).observation
        steps, last = 0, None
        for number in range(1, ctx.step_cap + 1):
            action = _expert_action(observation, spec, f"seed {seed}, before step {number}")
            last = ctx.step(session_id, action)
            check_step(
                last,
                spec,
                f"seed {seed}, expert step {number} ({action!r})",
                number,
                pb.IMAGE_ENCODING_RAW_RGB,
            )
            steps, observation = number, last.observation
            if last.terminated or last.truncated:
                break
    if last is None or not (last.terminated or last.truncated):
        return f"the expert made {steps} legal moves (the episode did not end within the cap)"
    if last.observation.HasField("expert"):
        raise CheckFailed(
            f"seed {seed}: the observation that ends the episode carries an expert move; expected it unset "
            "(the expert is filled only while the episode runs)"
        )
    success = last.info.fields["success"].bool_value
    return f"the expert made {steps} legal moves; the episode ended with success={success}"


def _expert_action(observation: pb.Observation, spec: pb.EnvironmentSpec, where: str) -> str:
    if not observation.HasField("expert"):
        raise CheckFailed(f"{where}: a want_expert session's observation has no expert; expected one")
    expert = observation.expert
    if expert.action not in observation.legal_actions:
        raise CheckFailed(
            f"{where}: the expert's action {expert.action!r} is not among the legal actions "
            f"{list(observation.legal_actions)}"
        )
    unknown = [f.key for f in expert.facts if f.key not in spec.fact_keys]
    if unknown:
        raise CheckFailed(
            f"{where}: expert facts use keys {unknown}, not among fact_keys {list(spec.fact_keys)}"
        )
    return expert.action
