"""SAVECONF writes changed options back to the config file; CONF_CHANGED reports them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.torcontrol import control_port, needs_stem, stem

SAVE = """
import json, sys, time
import stem
from stem.control import Controller
port, path, value = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {"events": [], "texts": []}
with Controller.from_port(port=port) as c:
    c.authenticate()
    c.add_event_listener(lambda e: out["events"].append(str(e).splitlines()), "CONF_CHANGED")
    out["config_file"] = c.get_info("config-file")
    c.set_conf("ExcludeExitNodes", value)
    c.save_conf()
    out["texts"].append(open(path).read())
    with open(path, "a") as f:  # someone edits the file while the node runs
        f.write("# edited by hand\\n")
    c.reset_conf("ExcludeExitNodes")
    try:
        c.save_conf()
    except stem.OperationFailed as exc:
        out["refused"] = [exc.code, exc.message]
    out["texts"].append(open(path).read())
    c.save_conf(force=True)
    out["texts"].append(open(path).read())
    time.sleep(0.5)
print(json.dumps(out))
"""


@needs_stem
def test_saveconf_writes_the_changed_options_back_to_the_config_file(testnet: dict[str, object]) -> None:
    config = Path(str(testnet["config"]))
    before = config.read_text()
    run = stem(SAVE, str(control_port(testnet)), str(config), "{zz}")
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["config_file"] == str(config.resolve())
    saved, refused_text, forced = seen["texts"]
    # only the changed key's line changed: its comment, the other lines and comments are as written
    assert saved == before.replace('exclude_exit_nodes = ""   #', 'exclude_exit_nodes = "{zz}"   #')
    # the file changed on disk since it was read: plain SAVECONF refuses (551), FORCE writes
    assert seen["refused"][0] == "551" and "changed on disk" in seen["refused"][1]
    assert refused_text == saved + "# edited by hand\n"
    assert forced == before + "# edited by hand\n"
    assert oct(config.stat().st_mode & 0o777) == "0o640"  # the mode is kept
    from onionmesh.app.config import check_file

    assert check_file(config, "testnet") == []
    # CONF_CHANGED: the new value, then the bare name when it went back to its default
    assert seen["events"][:2] == [
        ["CONF_CHANGED", "ExcludeExitNodes={zz}", "OK"],
        ["CONF_CHANGED", "ExcludeExitNodes", "OK"],
    ]
