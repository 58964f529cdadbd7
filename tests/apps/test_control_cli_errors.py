"""`onionmesh circuit` / `status-page` as a user runs them (real subprocesses, real servers on loopback):
one clear line for a port that is not onionmesh's and for a wrong cookie; `--json` where typed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.mesh import Mesh, start_mesh, stop_mesh

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def mesh(tmp_path: Path):
    m, extras = await start_mesh(tmp_path, prebuilt=1)
    try:
        yield m
    finally:
        await stop_mesh(m, extras)


async def onionmesh(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "onionmesh", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def cookie_dir(tmp_path: Path, cookie: bytes) -> Path:
    d = tmp_path / "client"
    d.mkdir(exist_ok=True)
    (d / "control_auth_cookie").write_bytes(cookie)
    (d / "control_auth_cookie").chmod(0o600)
    return d


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onionmesh: "), err
    return lines[0]


async def test_a_port_that_is_not_onionmesh_gets_one_line(tmp_path: Path) -> None:
    web_root = tmp_path / "www"
    web_root.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory", str(web_root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    junk = socket.socket()  # a TCP port that answers with no HTTP at all (like a relay's link port)
    junk.bind(("127.0.0.1", 0))
    junk.listen()
    try:
        port = int(server.stdout.readline().split(" port ")[1].split()[0])  # type: ignore[union-attr]
        data = cookie_dir(tmp_path, b"\x01" * 32)
        for action in (["list"], ["build", "--hops", "1"], ["show", "3"], ["new"]):
            code, _out, err = await onionmesh(
                "circuit", "--control", f"127.0.0.1:{port}", "--data-dir", str(data), *action
            )
            line = one_line_error(code, err)
            assert f"127.0.0.1:{port} is not an onionmesh control port" in line, (action, line)
            assert "File not found" not in line
        code, _out, err = await onionmesh(
            "status-page", "--control", f"127.0.0.1:{port}", "--data-dir", str(data)
        )
        assert "is not an onionmesh control port" in one_line_error(code, err)

        async def close_at_once() -> None:
            conn, _ = await asyncio.get_running_loop().sock_accept(junk)
            conn.sendall(b"\x00\x01junk\r\n\r\n")
            conn.close()

        junk.setblocking(False)
        accept = asyncio.create_task(close_at_once())
        jport = junk.getsockname()[1]
        code, _out, err = await onionmesh(
            "circuit", "--control", f"127.0.0.1:{jport}", "--data-dir", str(data), "list"
        )
        await accept
        assert f"127.0.0.1:{jport} is not an onionmesh control port" in one_line_error(code, err)
    finally:
        junk.close()
        server.terminate()
        server.wait(10)


async def test_a_wrong_cookie_is_called_wrong_and_names_the_file(mesh: Mesh, tmp_path: Path) -> None:
    control = mesh.client.control
    assert control is not None
    data = cookie_dir(tmp_path, bytes(32))
    target = ["--control", f"127.0.0.1:{control.port}", "--data-dir", str(data)]
    for args in (["circuit", *target, "list"], ["circuit", *target, "build"], ["status-page", *target]):
        code, _out, err = await onionmesh(*args)
        line = one_line_error(code, err)
        assert "wrong control cookie" in line and str(data / "control_auth_cookie") in line, line
        assert "send the control cookie" not in line


async def test_json_is_accepted_where_a_user_types_it(mesh: Mesh, tmp_path: Path) -> None:
    control = mesh.client.control
    assert control is not None
    data = cookie_dir(tmp_path, control.cookie)
    target = ["--control", f"127.0.0.1:{control.port}", "--data-dir", str(data)]
    for args in (["circuit", *target, "list", "--json"], ["circuit", "--json", *target, "list"],
                 ["circuit", "list", "--json", *target]):  # fmt: skip
        code, out, err = await onionmesh(*args)
        assert code == 0, err
        assert isinstance(json.loads(out), list), args
    code, out, err = await onionmesh("status-page", *target, "--json")
    assert code == 0, err
    link = json.loads(out)["link"]
    assert link.startswith(f"http://127.0.0.1:{control.port}/login?token=")
    code, out, _err = await onionmesh("circuit", *target, "list")
    assert out.startswith("  ID  STATE")  # without --json: the table
