from pathlib import Path

from desktop_app.core.paths import AppPaths, atomic_write_text


def test_folders_follow_platformdirs_into_the_test_home(isolated_dirs):
    paths = AppPaths.default().ensure()
    for folder in (paths.config_dir, paths.data_dir, paths.cache_dir, paths.plugins_dir):
        assert folder.is_dir()
        assert Path(isolated_dirs) in folder.parents
    assert paths.settings_file.parent == paths.config_dir


def test_parley_home_gives_a_portable_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_HOME", str(tmp_path / "portable"))
    paths = AppPaths.default()
    assert paths.database_file == tmp_path / "portable" / "data" / "conversations.db"


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
