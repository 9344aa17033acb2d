"""The control socket: how `queue retry` wakes a running serve (mailhouse/control.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from mailhouse.config import config_from_toml
from mailhouse.control import ControlSocket, control_path, notify


async def test_a_word_wakes_the_server_once_and_the_socket_goes_at_stop(tmp_path: Path) -> None:
    config = config_from_toml({"data_dir": str(tmp_path / "data")}, tmp_path / "m.toml")
    path = control_path(config)
    assert notify(config) is False  # no server: the CLI carries on
    woken: list[int] = []
    ctl = ControlSocket(path, lambda: woken.append(1))
    ctl.start()
    assert stat.S_ISSOCK(os.stat(path).st_mode) and os.stat(path).st_mode & 0o777 == 0o600
    for _ in range(5):
        assert notify(config) is True
    notify(config, b"nonsense")
    for _ in range(50):
        await asyncio.sleep(0.01)
        if woken:
            break
    await asyncio.sleep(0.05)
    assert woken and len(woken) <= 5  # several words read at one wake-up count once
    ctl.stop()
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_newer_one_is_left_alone(tmp_path: Path) -> None:
    config = config_from_toml({"data_dir": str(tmp_path / "data")}, tmp_path / "m.toml")
    path = control_path(config)
    old = ControlSocket(path, lambda: None)
    old.start()
    woken: list[int] = []
    new = ControlSocket(path, lambda: woken.append(1))
    new.start()  # the old one's file (as a killed server leaves it) is replaced
    old.stop()  # must not remove the new one's socket
    assert path.exists() and notify(config)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if woken:
            break
    assert woken
    new.stop()
    assert not path.exists()
