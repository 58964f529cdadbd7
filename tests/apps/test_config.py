"""Config files and precedence: flags > ONIONMESH_* environment > TOML file > defaults."""

from __future__ import annotations

import re
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.app.config import (
    MAX_FILE_BYTES,
    SCHEMAS,
    ConfigError,
    check_file,
    coerce,
    main_check,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    (ROOT / "relay" / "relay.example.toml", "relay"),
    (ROOT / "client" / "client.example.toml", "proxy"),
]


def write(tmp_path: Path, text: str, name: str = "om.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- precedence ----------------------------------------------------------------------------------
# (command, key, TOML literal, environment string, flag value as argparse gives it, the three results)
PRECEDENCE = [
    ("proxy", "hops", "2", "4", 5, (2, 4, 5)),
    ("proxy", "dht_refresh", "30", "45.5", 60.0, (30.0, 45.5, 60.0)),
    (
        "proxy",
        "socks",
        '"127.0.0.1:1080"',
        "[::1]:1081",
        ("127.0.0.1", 1082),
        (("127.0.0.1", 1080), ("::1", 1081), ("127.0.0.1", 1082)),
    ),
    (
        "proxy",
        "data_dir",
        '"/srv/a"',
        "/srv/b",
        Path("/srv/c"),
        (Path("/srv/a"), Path("/srv/b"), Path("/srv/c")),
    ),
    ("relay", "log_level", '"debug"', "warning", "error", ("debug", "warning", "error")),
    ("relay", "unsafe_logging", "false", "yes", False, (False, True, False)),
    ("relay", "nickname", '"FromFile"', "FromEnv", "FromFlag", ("FromFile", "FromEnv", "FromFlag")),
    (
        "relay",
        "bootstrap",
        '["192.0.2.1:1"]',
        "192.0.2.2:2,192.0.2.3:3",
        [("192.0.2.4", 4)],
        ((("192.0.2.1", 1),), (("192.0.2.2", 2), ("192.0.2.3", 3)), (("192.0.2.4", 4),)),
    ),
    ("testnet", "relays", "7", "9", 11, (7, 9, 11)),
    (
        "relay",
        "resolve",
        '["a=192.0.2.1"]',
        "b=192.0.2.2, c=::1",
        ["d=192.0.2.4"],
        (("a=192.0.2.1",), ("b=192.0.2.2", "c=::1"), ("d=192.0.2.4",)),
    ),
    (
        "proxy",
        "metrics",
        '"127.0.0.1:9101"',
        "[::1]:9102",
        ("localhost", 9103),
        (("127.0.0.1", 9101), ("::1", 9102), ("localhost", 9103)),
    ),
    (
        "testnet",
        "state_dir",
        '"~/net"',
        "/tmp/net",
        "rel/net",
        (Path.home() / "net", Path("/tmp/net"), Path("rel/net")),
    ),
]
RELAY_REQUIRED = {"listen": ("127.0.0.1", 9001), "data_dir": Path("/var/lib/r")}


@pytest.mark.parametrize(("command", "key", "literal", "env", "flag", "expected"), PRECEDENCE)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, command: str, key: str, literal: str, env: str, flag: object, expected: tuple
) -> None:
    base = dict(RELAY_REQUIRED) if command == "relay" else {}
    config = write(tmp_path, f"{key} = {literal}\n")
    environ = {f"ONIONMESH_{key.upper()}": env}
    assert resolve(command, base, {}, None)[key] == SCHEMAS[command][key].default
    assert resolve(command, base, {}, config)[key] == expected[0]
    assert resolve(command, base, environ, config)[key] == expected[1]
    assert resolve(command, {**base, key: flag}, environ, config)[key] == expected[2]


def test_resolve_returns_every_key_typed() -> None:
    values = resolve("relay", {"listen": "0.0.0.0:9001", "data_dir": "/d"}, {}, None)
    assert set(values) == set(SCHEMAS["relay"])
    assert values["listen"] == ("0.0.0.0", 9001)
    assert values["data_dir"] == Path("/d")
    assert values["metrics"] is None and values["advertise"] is None and values["bootstrap"] == ()
    assert (
        values["bandwidth"] == 10_000_000
        and values["exit_policy"] == ""
        and values["log_format"] == "console"
    )
    for command in ("proxy", "testnet"):
        assert set(resolve(command, {}, {}, None)) == set(SCHEMAS[command])


def test_config_file_from_environment(tmp_path: Path) -> None:
    env_file = write(tmp_path, "hops = 2\n", "env.toml")
    flag_file = write(tmp_path, "hops = 4\n", "flag.toml")
    environ = {"ONIONMESH_CONFIG": str(env_file)}
    assert resolve("proxy", {}, environ, None)["hops"] == 2
    assert resolve("proxy", {}, environ, flag_file)["hops"] == 4  # --config beats ONIONMESH_CONFIG


def test_lists(tmp_path: Path) -> None:
    key = "ONIONMESH_BOOTSTRAP"
    assert resolve("proxy", {}, {key: " 192.0.2.1:9001 , [2001:db8::1]:9002,"}, None)["bootstrap"] == (
        ("192.0.2.1", 9001),
        ("2001:db8::1", 9002),
    )
    assert resolve("proxy", {}, {key: ""}, None)["bootstrap"] == ()
    config = write(tmp_path, 'bootstrap = ["192.0.2.1:1", "192.0.2.2:2"]\n')
    assert len(resolve("proxy", {}, {}, config)["bootstrap"]) == 2
    with pytest.raises(ConfigError) as err:
        resolve("proxy", {}, {key: "192.0.2.1:9001,nope"}, None)
    assert err.value.problems == [
        'ONIONMESH_BOOTSTRAP: "bootstrap" item 2 must be HOST:PORT, got "nope" (no :PORT)'
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("0", False), ("true", True), ("False", False), ("YES", True), ("no", False)],
)
def test_bools_from_environment(text: str, value: bool) -> None:
    assert resolve("proxy", {}, {"ONIONMESH_UNSAFE_LOGGING": text}, None)["unsafe_logging"] is value


def test_optional_values_unset_by_empty_environment(tmp_path: Path) -> None:
    config = write(tmp_path, 'listen = "127.0.0.1:1"\ndata_dir = "d"\nmetrics = "127.0.0.1:9100"\n')
    assert resolve("relay", {}, {}, config)["metrics"] == ("127.0.0.1", 9100)
    assert resolve("relay", {}, {"ONIONMESH_METRICS": ""}, config)["metrics"] is None


def test_every_problem_is_reported(tmp_path: Path) -> None:
    config = write(tmp_path, "bandwidth = -1\n")
    environ = {"ONIONMESH_HOPS": "9", "ONIONMESH_LOG_LEVEL": "loud", "ONIONMESH_UNSAFE_LOGGING": "maybe"}
    with pytest.raises(ConfigError) as err:
        resolve("relay", {"nickname": "no spaces allowed", "colour": "red"}, environ, config)
    problems = err.value.problems
    assert problems == [
        f'{config}:1: "bandwidth" must be an integer >= 1, got -1',
        'ONIONMESH_LOG_LEVEL: "log_level" must be one of debug, info, warning, error, got "loud"',
        'ONIONMESH_UNSAFE_LOGGING: "unsafe_logging" must be true or false, got "maybe"',
        '--nickname: "nickname" must be 1..19 letters and digits, got "no spaces allowed"',
        "onionmesh relay has no setting 'colour'",
        '"listen" is required: give --listen, set ONIONMESH_LISTEN or put it in --config',
        '"data_dir" is required: give --data-dir, set ONIONMESH_DATA_DIR or put it in --config',
    ]  # ONIONMESH_HOPS is not a relay setting: ignored
    assert str(err.value) == "\n".join(problems)


# --- layouts -------------------------------------------------------------------------------------
def test_top_level_and_tables(tmp_path: Path) -> None:
    text = 'hops = 2\nlog_level = "debug"\n\n[proxy]\nhops = 4\n\n[testnet]\nhops = 6\nrelays = 8\n'
    config = write(tmp_path, text)
    assert check_file(config) == [] and check_file(config, "proxy") == []
    proxy = resolve("proxy", {}, {}, config)
    assert (proxy["hops"], proxy["log_level"]) == (4, "debug")  # the table wins over the top level
    testnet = resolve("testnet", {}, {}, config)
    assert (testnet["hops"], testnet["relays"], testnet["log_level"]) == (6, 8, "debug")
    only_table = write(tmp_path, '[relay]\nlisten = "127.0.0.1:9001"\ndata_dir = "/r"\n', "t.toml")
    assert resolve("relay", {}, {}, only_table)["listen"] == ("127.0.0.1", 9001)


def test_top_level_key_of_another_command(tmp_path: Path) -> None:
    config = write(tmp_path, 'listen = "127.0.0.1:1"\ndata_dir = "/r"\nhops = 3\n')
    assert check_file(config) == []  # some command has "hops"
    assert check_file(config, "relay") == [
        f'{config}:3: "hops" is not a setting of "onionmesh relay" (move it to [proxy] or [testnet])'
    ]
    with pytest.raises(ConfigError):
        resolve("relay", {}, {}, config)


# --- check_file ----------------------------------------------------------------------------------
CASES = [
    ('nickname = "a"\n\nlistn = "0.0.0.0:9001"\n', '3: unknown key "listn" (did you mean "listen"?)'),
    ('[relay]\n"data-dir" = "/x"\n', '2: unknown key "data-dir" in [relay] (did you mean "data_dir"?)'),
    ("[proxy]\n\nhops = 'three'\n", '3: "hops" must be an integer 1..8, got "three"'),
    ("hops = 9\n", '1: "hops" must be an integer 1..8, got 9'),
    ("hops = 3.5\n", '1: "hops" must be an integer 1..8, got 3.5'),
    ("dht_refresh = true\n", '1: "dht_refresh" must be a number >= 1, got true'),
    ('unsafe_logging = "yes"\n', '1: "unsafe_logging" must be true or false, got "yes"'),
    ('socks = "localhost"\n', '1: "socks" must be HOST:PORT, got "localhost" (no :PORT)'),
    (
        'socks = "127.0.0.1:70000"\n',
        '1: "socks" must be HOST:PORT, got "127.0.0.1:70000" (port must be 0..65535)',
    ),
    (
        'control = "::1:9051"\n',
        '1: "control" must be HOST:PORT, got "::1:9051" (put an IPv6 address in brackets',
    ),
    ("socks = 9050\n", '1: "socks" must be HOST:PORT, got 9050 (not a string)'),
    ('listen = ["::1", 9001]\n', '1: "listen" must be HOST:PORT, got ["::1", 9001] (not a string)'),
    ("hops = 0x" + "f" * 100 + "\n", '1: "hops" must be an integer 1..8, got a huge number'),
    ("hops = 1\nbandwidth = " + "9" * 5000 + "\n", "2: invalid TOML: Exceeds the limit (4300 digits)"),
    (
        'data_dir = "~nosuchuser-om/x"\n',
        '1: "data_dir" must be a path, got "~nosuchuser-om/x" (unknown user)',
    ),
    ('bootstrap = "192.0.2.1:1"\n', '1: "bootstrap" must be a list of HOST:PORT, got "192.0.2.1:1"'),
    ("data_dir = 5\n", '1: "data_dir" must be a path, got 5'),
    (
        'resolve = ["intranet=1.2.3"]\n',
        '1: "resolve" item 1 must be NAME=IP, got "intranet=1.2.3" (not an IP',
    ),
    ('resolve = ["192.0.2.1"]\n', '1: "resolve" item 1 must be NAME=IP, got "192.0.2.1" (no NAME=)'),
    (
        'metrics = "0.0.0.0:9100"\n',
        '1: "metrics" must be on loopback (127.0.0.1, [::1] or localhost), got "0.0.0.0"',
    ),
    ('log_format = "xml"\n', '1: "log_format" must be one of console, json, got "xml"'),
    ('exit_policy = "acept *:80"\n', '1: "exit_policy" is not a valid exit policy: '),
    ("[relya]\nlisten = 1\n", "1: unknown table [relya] (did you mean [relay]?)"),
    ("[circuit]\n", "1: unknown table [circuit] (tables: [relay] [proxy] [testnet])"),
    ("hops = 1\n[proxy.extra]\nb = 2\n", '2: unknown key "extra" in [proxy]'),
    ("hops = 1\nproxy = 3\n", '2: "proxy" must be a table [proxy], got 3'),
    ('[proxy]\nhops = 3\nsocks = { host = "x" }\n', '3: "socks" must be HOST:PORT, got a table'),
    ("hops = 3\nhops = 4\n", "2: invalid TOML: Cannot overwrite a value (column 9)"),
    ("hops = 3\n\nlisten = \n", "3: invalid TOML: Invalid value (column 10)"),
    ("hops = 3\n" + "a." * 100 + "b = 1\n", "2: a key with more than 64 dots"),
    ("hops = " + "[" * 5000 + "]" * 5000, "1: invalid TOML: nested too deeply"),
]


@pytest.mark.parametrize(("text", "problem"), CASES)
def test_check_file_names_the_line(tmp_path: Path, text: str, problem: str) -> None:
    config = write(tmp_path, text)
    problems = check_file(config)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{config}:{problem}")


def test_check_file_lists_every_problem(tmp_path: Path) -> None:
    config = write(tmp_path, 'hops = 0\nsocks = "x"\n[relay]\nlisten = 5\nnick = "a"\n')
    assert [p.split(":")[1] for p in check_file(config)] == ["1", "2", "4", "5"]


def test_check_file_refuses_big_unreadable_and_binary_files(tmp_path: Path) -> None:
    big = write(tmp_path, "# " + "x" * MAX_FILE_BYTES + "\n", "big.toml")
    assert check_file(big) == [
        f"{big}: too large ({MAX_FILE_BYTES + 3} bytes); a config file is at most 1 MiB"
    ]
    missing = tmp_path / "missing.toml"
    assert check_file(missing) == [f"{missing}: cannot read: No such file or directory"]
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"hops = 3\n# \xff\xfe\n")
    assert check_file(binary) == [f"{binary}:2: not UTF-8 text"]
    with pytest.raises(ConfigError, match="cannot read"):
        resolve("proxy", {}, {}, missing)


def test_main_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "hops = 3\n", "good.toml")
    assert main_check(good) == 0
    assert capsys.readouterr().out == f"{good}: OK\n"
    bad = write(tmp_path, "hops = 0\nsockz = 1\n", "bad.toml")
    assert main_check(bad) == 1
    assert capsys.readouterr().out.splitlines() == check_file(bad)


# --- the example files ---------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "command"), EXAMPLES)
def test_example_files_pass_and_document_every_key(path: Path, command: str) -> None:
    assert check_file(path) == [] and check_file(path, command) == []
    text = path.read_text()
    lines = text.splitlines()
    for name, key in SCHEMAS[command].items():
        assert re.search(rf"^#? ?{name} = ", text, re.M), f"{name} is not documented"
        commented = [i for i, line in enumerate(lines) if line.startswith(f"# {name} = ")]
        for i in commented:  # every commented-out example is valid when uncommented
            uncommented = "\n".join([*lines[:i], lines[i][2:], *lines[i + 1 :]])
            with tempfile.TemporaryDirectory() as tmp:
                assert check_file(write(Path(tmp), uncommented), command) == [], lines[i]
        if key.default is not None and commented:  # the first commented-out value is the default
            assert coerce(key, tomllib.loads(lines[commented[0]][2:])[name]) == key.default, name


# --- robustness ----------------------------------------------------------------------------------
NAMES = sorted({*SCHEMAS, *(k for s in SCHEMAS.values() for k in s), "listn", "relya", "proxy.sub"})
VALUES = [
    '"127.0.0.1:9050"',
    '"x"',
    "3",
    "-1",
    "1e400",
    "true",
    "[]",
    '["1.2.3.4:5", 7]',
    "{a = 1}",
    '"~"',
    '""',
]


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_never_raises(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        for command in (None, "relay", "proxy", "testnet"):
            problems = check_file(path, command)
            assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)).map(" = ".join),
            st.sampled_from(NAMES).map(lambda n: f"[{n}]"),
        ),
        max_size=12,
    )
)
def test_toml_shaped_text_never_raises(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text("\n".join(lines))
        for command in (None, "relay", "proxy", "testnet"):
            problems = check_file(path, command)
            assert all(re.match(rf"{re.escape(str(path))}:\d+: ", p) for p in problems), problems
            try:
                resolve(command or "proxy", {}, {}, path)
            except ConfigError as exc:
                assert exc.problems
