"""The checked-in Python stubs must be exactly what `python -m visact.protogen` makes from proto/."""

from __future__ import annotations

from pathlib import Path

import pytest

from visact import protogen


def test_stubs_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generated = protogen.generate(tmp_path)
    assert generated, "no .proto files found under proto/"
    stale = []
    for fresh in generated:
        checked_in = protogen.REPO_ROOT / fresh.relative_to(tmp_path)
        if not checked_in.exists() or checked_in.read_bytes() != fresh.read_bytes():
            stale.append(str(checked_in.relative_to(protogen.REPO_ROOT)))
    assert not stale, f"stubs drifted from the .proto files; run `python -m visact.protogen`: {stale}"


def test_every_proto_field_is_commented() -> None:
    """A comment line right above every field, enum value, rpc and message (style rule 1)."""
    missing = []
    for proto in protogen.proto_files():
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            is_field = (
                stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "//"))
            )
            is_rpc = stripped.startswith("rpc ")
            if not (is_field or is_rpc):
                continue
            previous = lines[number - 1].strip() if number else ""
            if not previous.startswith("//"):
                missing.append(f"{proto.name}:{number + 1}: {stripped}")
    assert not missing, "uncommented proto fields:\n" + "\n".join(missing)
