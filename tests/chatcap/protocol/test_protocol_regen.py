"""The committed ``chat_pb2.py`` / ``chat_pb2.pyi`` are what ``make proto`` produces now."""

import subprocess
import sys
from pathlib import Path

from chatcap.protocol import regen


def test_regenerating_into_a_tmp_dir_gives_the_committed_bytes(tmp_path: Path) -> None:
    written = regen.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(regen.GENERATED)
    for name in regen.GENERATED:
        committed = (regen.PACKAGE_DIR / name).read_bytes()
        assert (tmp_path / name).read_bytes() == committed, f"{name} is stale: run `make proto`"


def test_generated_code_holds_no_absolute_path(tmp_path: Path) -> None:
    regen.generate(tmp_path)
    for name in regen.GENERATED:
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert str(regen.ROOT) not in text
        assert str(tmp_path) not in text


def test_regen_check_passes_on_the_committed_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatcap.protocol.regen", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_regen_check_fails_on_a_stale_copy(tmp_path: Path) -> None:
    regen.generate(tmp_path)
    (tmp_path / "chat_pb2.pyi").write_text("# edited by hand\n", encoding="utf-8")
    assert regen.main(["--check", "--out", str(tmp_path)]) == 1
    assert regen.stale_files(tmp_path) == ["chat_pb2.pyi"]
