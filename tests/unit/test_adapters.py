"""Unit tests for visact/model/adapters.py on a tiny real peft model (two Linear layers, LoRA r=2).

What an agent relies on: the file round-trips tensors and LoRA config, is safetensors (never a
pickle), a damaged transfer is refused, and applying a file that does not fit changes nothing.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import get_peft_model_state_dict
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from visact.model.adapters import (
    CONFIG_KEY,
    AdapterError,
    adapter_bytes,
    apply_adapter,
    attach_lora,
    lora_config,
    peft_config_from_dict,
    read_adapter,
    save_adapter_file,
    sha256_hex,
)

TARGETS = ["fc1", "fc2"]


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_peft(seed: int, *, r: int = 2, randomize: bool = True) -> Any:
    """Same base weights every time; LoRA weights random per ``seed`` (peft's B = 0 otherwise)."""
    torch.manual_seed(0)
    model = attach_lora(TwoLayers(), lora_config(TARGETS, r=r, alpha=4, dropout=0.0))
    if randomize:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model.eval()


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def donor() -> Any:
    return tiny_peft(seed=1)


@pytest.fixture(scope="module")
def donor_bytes(donor: Any) -> bytes:
    return adapter_bytes(donor)


# ---------------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------------


def test_round_trip_restores_tensors_and_lora_config(donor: Any, donor_bytes: bytes) -> None:
    tensors, config = read_adapter(donor_bytes, expected_sha256=sha256_hex(donor_bytes))

    assert_same_tensors(tensors, lora_state(donor))
    assert len(tensors) == 4  # lora_A and lora_B of both layers
    assert config["r"] == 2 and config["lora_alpha"] == 4 and config["lora_dropout"] == 0.0
    assert sorted(config["target_modules"]) == TARGETS

    restored = peft_config_from_dict(config)
    assert (restored.r, restored.lora_alpha, set(restored.target_modules)) == (2, 4, set(TARGETS))
    receiver = attach_lora(_base(), restored).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(receiver(x), donor(x))  # fresh LoRA (B = 0) differs from the donor's
    apply_adapter(receiver, tensors)
    assert_same_tensors(lora_state(receiver), lora_state(donor))
    torch.testing.assert_close(receiver(x), donor(x), rtol=0, atol=0)


def _base() -> nn.Module:
    torch.manual_seed(0)
    return TwoLayers()


def test_the_file_is_safetensors_not_a_pickle(donor: Any, donor_bytes: bytes, tmp_path: Any) -> None:
    assert donor_bytes[0] != 0x80  # pickle's PROTO opcode (protocol 2+)
    assert not donor_bytes.startswith(b"PK")  # torch.save's zip container
    header_len = int.from_bytes(donor_bytes[:8], "little")
    header = json.loads(donor_bytes[8 : 8 + header_len])
    assert CONFIG_KEY in header["__metadata__"]
    assert_same_tensors(safetensors_load(donor_bytes), lora_state(donor))

    path, sha = save_adapter_file(donor, tmp_path / "v000001")
    assert path == tmp_path / "v000001" / "adapter.safetensors"
    assert path.read_bytes() == donor_bytes
    assert sha == sha256_hex(donor_bytes)
    assert not list(path.parent.glob("*.tmp"))


def test_the_file_is_the_same_bytes_for_the_same_weights(donor_bytes: bytes) -> None:
    # one sha256 per version only works if the encoding is deterministic
    assert adapter_bytes(tiny_peft(seed=1)) == donor_bytes
    assert adapter_bytes(tiny_peft(seed=2)) != donor_bytes


def test_a_corrupted_tensor_byte_is_caught_by_the_sha256_only(donor: Any, donor_bytes: bytes) -> None:
    damaged = bytearray(donor_bytes)
    damaged[-1] ^= 0x01  # inside the tensor data: safetensors has no checksum of its own

    with pytest.raises(AdapterError, match=r"sha256 .* was announced"):
        read_adapter(bytes(damaged), expected_sha256=sha256_hex(donor_bytes))

    tensors, _ = read_adapter(bytes(damaged))  # parses fine, silently wrong: why the hash matters
    assert any(not torch.equal(tensors[k], v) for k, v in lora_state(donor).items())


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_a_truncated_file_is_refused_by_hash_and_by_parser(donor_bytes: bytes, keep: int) -> None:
    cut = donor_bytes[:keep]
    with pytest.raises(AdapterError, match="corrupted or cut short"):
        read_adapter(cut, expected_sha256=sha256_hex(donor_bytes))
    with pytest.raises(AdapterError, match="not a safetensors adapter file"):
        read_adapter(cut)


def test_a_corrupted_header_is_refused_by_the_parser(donor_bytes: bytes) -> None:
    damaged = bytearray(donor_bytes)
    damaged[8] = ord("x")  # the header's opening brace
    with pytest.raises(AdapterError, match="not a safetensors adapter file"):
        read_adapter(bytes(damaged))


def test_a_corrupted_lora_config_is_refused_by_the_parser(donor_bytes: bytes) -> None:
    # the config is JSON inside the header's JSON: the outer one stays valid
    position = donor_bytes.index(b'\\"r\\": 2')
    damaged = bytearray(donor_bytes)
    damaged[position + len(b'\\"r\\": ')] = ord("x")
    with pytest.raises(AdapterError, match="LoRA config"):
        read_adapter(bytes(damaged))


def test_a_file_without_the_lora_config_is_refused(donor: Any) -> None:
    bare = safetensors_save(lora_state(donor), metadata={"other": "1"})
    with pytest.raises(AdapterError, match=f"lacks its LoRA config .*{CONFIG_KEY}"):
        read_adapter(bare)


@settings(max_examples=80, deadline=None)
@given(position=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_any_damaged_byte_is_refused_by_the_hash(donor_bytes: bytes, position: int, xor: int) -> None:
    damaged = bytearray(donor_bytes)
    damaged[position % len(damaged)] ^= xor
    with pytest.raises(AdapterError, match="corrupted or cut short"):
        read_adapter(bytes(damaged), expected_sha256=sha256_hex(donor_bytes))
    try:  # without the hash: parsed or refused as an AdapterError, never another exception
        tensors, config = read_adapter(bytes(damaged))
    except AdapterError:
        return
    assert isinstance(config, dict) and len(tensors) == 4


# ---------------------------------------------------------------------------------------------
# applying: all or nothing
# ---------------------------------------------------------------------------------------------


def _misfits(donor: Any) -> dict[str, dict[str, torch.Tensor]]:
    good = lora_state(donor)
    names = sorted(good)
    last = names[-1]  # sorted last, so a non-atomic apply would have written the others already
    wrong_shape = {**good, last: torch.zeros(good[last].shape[0], good[last].shape[1] + 1)}
    missing = {k: v for k, v in good.items() if k != last}
    unexpected = {**good, "base_model.model.fc3.lora_A.weight": torch.zeros(2, 6)}
    other_rank = lora_state(tiny_peft(seed=5, r=3))
    return {
        "wrong_shape": wrong_shape,
        "missing": missing,
        "unexpected": unexpected,
        "other_rank": other_rank,
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("wrong_shape", "has shape"),
        ("missing", "missing"),
        ("unexpected", "unexpected"),
        ("other_rank", "has shape"),
    ],
)
def test_an_adapter_that_does_not_fit_raises_and_leaves_the_model_unchanged(
    donor: Any, kind: str, message: str
) -> None:
    model = tiny_peft(seed=9)
    before = lora_state(model)
    tensors = _misfits(donor)[kind]
    assert any(not torch.equal(before[k], v) for k, v in tensors.items() if k in before)

    with pytest.raises(AdapterError, match=message):
        apply_adapter(model, tensors)

    assert_same_tensors(lora_state(model), before)


def test_a_refused_file_from_the_wire_leaves_the_model_unchanged(donor_bytes: bytes) -> None:
    model = tiny_peft(seed=9)
    before = lora_state(model)
    damaged = donor_bytes[:-3]
    with pytest.raises(AdapterError):
        apply_adapter(model, read_adapter(damaged, expected_sha256=sha256_hex(donor_bytes))[0])
    assert_same_tensors(lora_state(model), before)


def test_attaching_lora_to_a_transformers_vlm_warns_nothing_about_peft_internals() -> None:
    from visact.model.loading import load_vlm, lora_target_modules

    loaded = load_vlm("tiny", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attach_lora(loaded.model, lora_config(lora_target_modules(loaded.model), r=2, alpha=4, dropout=0.0))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)], [
        str(w.message) for w in caught
    ]
