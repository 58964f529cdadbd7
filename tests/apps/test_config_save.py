"""SAVECONF's file edit (app/config_save.py): only the changed keys' lines change, comments and
everything else stay byte for byte, the result checks, and refusals leave the file alone.  The
control-port side runs with stem in tests/apps/tor_control/test_saveconf.py."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.app.config import check_file
from onionmesh.app.config_save import ConfSaver, edit_toml
from onionmesh.errors import ConfigSaveError

BASE = """# my proxy
log_level = "warning"  # quiet

[proxy]
# exits
exit_nodes = "{de}"   # Germany only
strict_nodes = false

[testnet]
relays = 4
"""

node_list = st.lists(
    st.sampled_from(["{de}", "{fr}", "{us}", "$" + "AB" * 20, "10.0.0.0/8"]), max_size=3
).map(",".join)


@settings(max_examples=150, deadline=None)
@given(exit_nodes=node_list, exclude=st.none() | node_list, strict=st.booleans(), top=st.booleans())
def test_an_edit_changes_only_the_saved_keys(
    exit_nodes: str, exclude: str | None, strict: bool, top: bool
) -> None:
    text = (
        BASE
        if not top
        else BASE.replace("[proxy]\n# exits\n", "# exits\n").replace(
            "strict_nodes = false\n\n[testnet]", "strict_nodes = false\n[testnet]"
        )
    )
    changes: dict[str, object | None] = {"exit_nodes": exit_nodes, "strict_nodes": strict}
    if exclude is not None:
        changes["exclude_exit_nodes"] = exclude
    new = edit_toml(text, "proxy", changes)
    data = tomllib.loads(new)
    values = data if top else data["proxy"]
    assert values["exit_nodes"] == exit_nodes and values["strict_nodes"] is strict
    assert values.get("exclude_exit_nodes", None) == exclude
    old_lines, new_lines = text.splitlines(), new.splitlines()
    changed = [line for line in new_lines if line not in old_lines]
    assert all(line.split("=")[0].strip() in changes for line in changed)  # nothing else changed
    assert all(
        line in new_lines
        for line in old_lines
        if "=" not in line or line.split("=")[0].strip() not in changes
    )
    assert "# Germany only" in new  # the changed line's own comment is kept
    assert data["testnet"]["relays"] == 4


def test_a_value_over_several_lines_or_an_inline_table_is_refused() -> None:
    with pytest.raises(ConfigSaveError, match="several lines"):
        edit_toml('[proxy]\nexit_nodes = """\n{de}\n"""\n', "proxy", {"exit_nodes": "{fr}"})
    with pytest.raises(ConfigSaveError, match="inline table"):
        edit_toml('proxy = {exit_nodes = "{de}"}\n', "proxy", {"exit_nodes": "{fr}"})


def test_a_path_set_back_to_none_loses_its_line() -> None:
    text = '[proxy]\ngeoip_file = "/x/geoip"  # mine\nhops = 3\n'
    assert edit_toml(text, "proxy", {"geoip_file": None}) == "[proxy]\nhops = 3\n"


def test_the_saver_keeps_mode_refuses_a_file_changed_on_disk_and_force_writes(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(BASE)
    os.chmod(path, 0o640)
    current: dict[str, object | None] = {"exit_nodes": "{de}", "strict_nodes": False}
    saver = ConfSaver(path, "proxy", lambda: dict(current))
    assert saver(False) == 0 and path.read_text() == BASE  # nothing changed: nothing written
    current["exit_nodes"] = "{fr}"
    assert saver(False) == 1
    assert path.read_text() == BASE.replace('"{de}"   #', '"{fr}"   #')
    assert oct(path.stat().st_mode & 0o777) == "0o640" and check_file(path, "proxy") == []
    with path.open("a") as f:
        f.write("# hand edit\n")
    current["strict_nodes"] = True
    with pytest.raises(ConfigSaveError, match="changed on disk"):
        saver(False)
    assert path.read_text().endswith("strict_nodes = false\n\n[testnet]\nrelays = 4\n# hand edit\n")
    assert saver(True) == 1 and "strict_nodes = true" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["proxy.toml"]  # no temporary file left
