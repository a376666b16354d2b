from visact.env.v1 import env_pb2 as _env_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("agent_name", "model_name", "base_fingerprint", "environments", "sessions", "previous_agent_id")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    model_name: str
    base_fingerprint: str
    environments: _containers.RepeatedScalarFieldContainer[str]
    sessions: int
    previous_agent_id: str
    def __init__(self, agent_name: _Optional[str] = ..., model_name: _Optional[str] = ..., base_fingerprint: _Optional[str] = ..., environments: _Optional[_Iterable[str]] = ..., sessions: _Optional[int] = ..., previous_agent_id: _Optional[str] = ...) -> None: ...

class SamplingConfig(_message.Message):
    __slots__ = ("temperature", "max_new_tokens", "chain_of_thought", "format_penalty", "group_size", "prefill_answer")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_OF_THOUGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREFILL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    max_new_tokens: int
    chain_of_thought: bool
    format_penalty: float
    group_size: int
    prefill_answer: bool
    def __init__(self, temperature: _Optional[float] = ..., max_new_tokens: _Optional[int] = ..., chain_of_thought: _Optional[bool] = ..., format_penalty: _Optional[float] = ..., group_size: _Optional[int] = ..., prefill_answer: _Optional[bool] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("agent_id", "latest_version", "max_policy_lag", "sampling", "run_id", "lora")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_POLICY_LAG_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    latest_version: int
    max_policy_lag: int
    sampling: SamplingConfig
    run_id: str
    lora: LoraLayout
    def __init__(self, agent_id: _Optional[str] = ..., latest_version: _Optional[int] = ..., max_policy_lag: _Optional[int] = ..., sampling: _Optional[_Union[SamplingConfig, _Mapping]] = ..., run_id: _Optional[str] = ..., lora: _Optional[_Union[LoraLayout, _Mapping]] = ...) -> None: ...

class LoraLayout(_message.Message):
    __slots__ = ("target_modules", "rank")
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    rank: int
    def __init__(self, target_modules: _Optional[_Iterable[str]] = ..., rank: _Optional[int] = ...) -> None: ...

class WatchVersionsRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class VersionAnnouncement(_message.Message):
    __slots__ = ("version", "sha256", "size_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    size_bytes: int
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class FetchWeightsRequest(_message.Message):
    __slots__ = ("agent_id", "version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: int
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class WeightsChunk(_message.Message):
    __slots__ = ("version", "sha256", "size_bytes", "offset", "data", "file_name")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    size_bytes: int
    offset: int
    data: bytes
    file_name: str
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., file_name: _Optional[str] = ...) -> None: ...

class TrajectoryStep(_message.Message):
    __slots__ = ("image", "prompt_ids", "generated_ids", "log_probs", "action_start", "text", "action", "parse_failure", "format_penalty", "reward", "terminated", "truncated", "policy_version", "temperature", "episode_step", "success", "fact_checks")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_IDS_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBS_FIELD_NUMBER: _ClassVar[int]
    ACTION_START_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PARSE_FAILURE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_STEP_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FACT_CHECKS_FIELD_NUMBER: _ClassVar[int]
    image: _env_pb2.Image
    prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    generated_ids: _containers.RepeatedScalarFieldContainer[int]
    log_probs: _containers.RepeatedScalarFieldContainer[float]
    action_start: int
    text: str
    action: str
    parse_failure: str
    format_penalty: float
    reward: float
    terminated: bool
    truncated: bool
    policy_version: int
    temperature: float
    episode_step: int
    success: bool
    fact_checks: _containers.RepeatedCompositeFieldContainer[FactCheck]
    def __init__(self, image: _Optional[_Union[_env_pb2.Image, _Mapping]] = ..., prompt_ids: _Optional[_Iterable[int]] = ..., generated_ids: _Optional[_Iterable[int]] = ..., log_probs: _Optional[_Iterable[float]] = ..., action_start: _Optional[int] = ..., text: _Optional[str] = ..., action: _Optional[str] = ..., parse_failure: _Optional[str] = ..., format_penalty: _Optional[float] = ..., reward: _Optional[float] = ..., terminated: _Optional[bool] = ..., truncated: _Optional[bool] = ..., policy_version: _Optional[int] = ..., temperature: _Optional[float] = ..., episode_step: _Optional[int] = ..., success: _Optional[bool] = ..., fact_checks: _Optional[_Iterable[_Union[FactCheck, _Mapping]]] = ...) -> None: ...

class FactCheck(_message.Message):
    __slots__ = ("key", "correct")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    key: str
    correct: bool
    def __init__(self, key: _Optional[str] = ..., correct: _Optional[bool] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ("env", "session", "seed", "steps", "bootstrap_image", "bootstrap_prompt_ids")
    ENV_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_IMAGE_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    env: str
    session: str
    seed: int
    steps: _containers.RepeatedCompositeFieldContainer[TrajectoryStep]
    bootstrap_image: _env_pb2.Image
    bootstrap_prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, env: _Optional[str] = ..., session: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[TrajectoryStep, _Mapping]]] = ..., bootstrap_image: _Optional[_Union[_env_pb2.Image, _Mapping]] = ..., bootstrap_prompt_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SubmitEpisodeRequest(_message.Message):
    __slots__ = ("agent_id", "episode", "episode_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    episode: Episode
    episode_id: str
    def __init__(self, agent_id: _Optional[str] = ..., episode: _Optional[_Union[Episode, _Mapping]] = ..., episode_id: _Optional[str] = ...) -> None: ...

class SubmitEpisodeResponse(_message.Message):
    __slots__ = ("status", "retry_after_seconds", "latest_version", "reason")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[SubmitEpisodeResponse.Status]
        ACCEPTED: _ClassVar[SubmitEpisodeResponse.Status]
        WAIT: _ClassVar[SubmitEpisodeResponse.Status]
    STATUS_UNSPECIFIED: SubmitEpisodeResponse.Status
    ACCEPTED: SubmitEpisodeResponse.Status
    WAIT: SubmitEpisodeResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: SubmitEpisodeResponse.Status
    retry_after_seconds: float
    latest_version: int
    reason: str
    def __init__(self, status: _Optional[_Union[SubmitEpisodeResponse.Status, str]] = ..., retry_after_seconds: _Optional[float] = ..., latest_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "running_version", "steps")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    running_version: int
    steps: int
    def __init__(self, agent_id: _Optional[str] = ..., running_version: _Optional[int] = ..., steps: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("latest_version", "may_roll_out", "min_version")
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAY_ROLL_OUT_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    latest_version: int
    may_roll_out: bool
    min_version: int
    def __init__(self, latest_version: _Optional[int] = ..., may_roll_out: _Optional[bool] = ..., min_version: _Optional[int] = ...) -> None: ...
