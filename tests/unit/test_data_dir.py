"""Where written paths go: ``$MENTORPULSE_DATA_DIR``, else ``data_dir``, else the config's
folder; read inputs stay next to the config whichever is set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mentorpulse.config.loader import load_config
from mentorpulse.config.schema import DATA_DIR_ENV, GoogleSource
from mentorpulse.notify.transport import FileTransport, build_transport
from mentorpulse.storage.engine import resolve_url


def _config(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mentorpulse.yaml"
    path.write_text(
        "database: sqlite:///state.db\n"
        "roster: {path: roster.csv}\n"
        "notify:\n  transport: {kind: file, path: outbox}\n"
        "reports: {out_dir: reports}\n" + extra,
        encoding="utf-8",
    )
    return path


def _sqlite_file(config_path: Path) -> Path:
    config = load_config(config_path)
    return Path(resolve_url(config.database, config.state_dir).removeprefix("sqlite:///"))


def test_default_keeps_written_files_next_to_the_config(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path / "conf"))
    assert config.state_dir == tmp_path / "conf"
    assert _sqlite_file(tmp_path / "conf" / "mentorpulse.yaml") == tmp_path / "conf" / "state.db"
    assert config.resolve_state(config.reports.out_dir) == tmp_path / "conf" / "reports"


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = _config(tmp_path / "conf", "data_dir: ../var\n")
    config = load_config(path)
    assert config.state_dir == tmp_path / "conf" / ".." / "var"
    assert _sqlite_file(path) == (tmp_path / "var" / "state.db")
    # Inputs are still read next to the config.
    assert config.resolve(config.roster.path) == tmp_path / "conf" / "roster.csv"


def test_absolute_data_dir_and_absolute_paths(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = _config(tmp_path / "conf", f"data_dir: {data}\n")
    config = load_config(path)
    assert config.resolve_state("outbox") == data / "outbox"
    # An absolute written path is left where the admin put it.
    assert config.resolve_state(str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"
    assert resolve_url(f"sqlite:///{tmp_path}/abs.db", config.state_dir).endswith(
        f"{tmp_path}/abs.db"
    )


def test_environment_overrides_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path / "conf", f"data_dir: {tmp_path / 'from-file'}\n")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    config = load_config(path)
    assert config.state_dir == tmp_path / "from-env"
    assert _sqlite_file(path) == tmp_path / "from-env" / "state.db"
    transport = build_transport(config.notify, config.base_dir, config.state_dir)
    assert isinstance(transport, FileTransport)
    assert transport.folder == tmp_path / "from-env" / "outbox"


def test_a_relative_environment_value_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, "state")
    assert load_config(path).state_dir == tmp_path / "state"


def test_an_empty_environment_value_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, " ")
    assert load_config(_config(tmp_path / "conf")).state_dir == tmp_path / "conf"


def test_the_data_folder_need_not_exist_yet_but_another_folder_must(tmp_path: Path) -> None:
    from mentorpulse.config.loader import ConfigError

    path = _config(tmp_path / "conf", f"data_dir: {tmp_path / 'fresh'}\n")
    load_config(path)  # made on first use, not refused
    path.write_text(
        path.read_text(encoding="utf-8").replace("state.db", "sub/state.db"), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{tmp_path / 'fresh' / 'sub'} does not exist" in caught.value.problems[0]


def test_the_engine_makes_the_data_folder_private(tmp_path: Path) -> None:
    from mentorpulse.storage.engine import make_engine

    engine = make_engine("sqlite:///state.db", tmp_path / "fresh")
    with engine.connect():
        pass
    engine.dispose()
    assert (tmp_path / "fresh" / "state.db").is_file()
    assert os.stat(tmp_path / "fresh").st_mode & 0o777 == 0o700


def test_token_stores_move_to_the_data_folder_and_keys_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(
        tmp_path / "conf",
        "sources:\n"
        "  - id: g\n    kind: google\n    users: [a@example.org]\n"
        "    service_account_key: key.json\n    token_store: tokens.json\n",
    )
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    config = load_config(path)
    source = config.sources[0]
    assert isinstance(source, GoogleSource)
    placed = config.with_state_paths(source)
    assert placed.token_store == str(tmp_path / "data" / "tokens.json")
    assert placed.service_account_key == "key.json"  # read next to the config
    assert config.with_state_paths(placed) == placed  # absolute stays absolute
