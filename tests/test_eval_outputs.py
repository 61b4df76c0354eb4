"""`srfeat eval`'s files: written where they were checked, and never over (or among) its inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import one_error_line, srfeat_cli
from skimage import data as samples

from srfeat.data.io import write_png


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "Photos"
    write_png(folder / "astronaut.png", samples.astronaut()[:112, :112])  # NIQE's 96 px block after the shave
    return folder


def test_a_home_relative_output_is_written_where_it_was_checked(photos: Path, tmp_path: Path) -> None:
    # `--json=~/r.json` (no shell expansion after `=`) was checked as $HOME/r.json but written to ./~/r.json,
    # and a --data of `~/Photos` was "not found"
    home = tmp_path / "home"
    home.mkdir()
    args = ("eval", "--model", "bicubic", "--metrics", "psnr")
    result = srfeat_cli(*args, "--data", photos, "--json=~/r.json", cwd=tmp_path, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (home / "r.json").is_file() and not (tmp_path / "~").exists()
    (home / "other.json").write_text("mine\n")
    result = srfeat_cli(*args, "--data", photos, "--json=~/other.json", cwd=tmp_path, env={"HOME": str(home)})
    assert "exists: pass --overwrite" in one_error_line(result)
    photos.rename(home / "Photos")
    result = srfeat_cli(*args, "--data=~/Photos", cwd=tmp_path, env={"HOME": str(home)})
    assert result.returncode == 0 and "| bicubic | Photos |" in result.stdout, result.stderr
