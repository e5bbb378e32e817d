"""``groundkey passes``: table and JSON output, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from groundkey_daemon.cli import main

ROOT = Path(__file__).parents[2]
TLE = ROOT / "config" / "tle" / "micius.tle"
XINGLONG = "40.3959,117.5775,893"
EPOCH = "2016-12-18T21:38:11Z"
GROUNDKEY = str(Path(sys.executable).parent / "groundkey")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["passes", "--tle", str(TLE), "--station", XINGLONG, "--start", EPOCH]
    code, out, err = _run([*argv, "--hours", "24", "--min-el", "10"], capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("MICIUS")]
    assert len(rows) == 2
    assert "2016-12-19 03:46:24" in rows[0]
    assert "71.6" in rows[0]  # max elevation
    assert "16:48:43" in rows[1]


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["passes", "--tle", str(TLE), "--station", XINGLONG, "--start", EPOCH, "--json"]
    code, out, err = _run([*argv, "--hours", "48", "--min-el", "10"], capsys)
    assert code == 0, err
    passes = json.loads(out)
    assert len(passes) == 4
    first = passes[0]
    assert first["aos"] == "2016-12-19T03:46:24.049Z"
    assert first["los"].startswith("2016-12-19T03:53:44")
    assert first["max_el_deg"] == pytest.approx(71.55, abs=0.01)
    assert {"tca", "aos_az_deg", "los_az_deg", "norad_id"} <= set(first)
    assert [p["aos"] for p in passes] == sorted(p["aos"] for p in passes)


def _write_tle(tmp_path: Path, line_no: int, new: str) -> Path:
    lines = TLE.read_text().splitlines()
    lines[line_no - 1] = new
    path = tmp_path / "bad.tle"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line_no", "mutate", "expected"),
    [
        (2, lambda s: s[:68] + "0", "bad.tle: tle: line 2: bad checksum"),
        (3, lambda s: s[:50], "bad.tle: tle: line 3: TLE line 2 must be 69 characters, got 50"),
        (3, lambda s: "3" + s[1:], "bad.tle: tle: line 3: expected TLE line 2"),
    ],
)
def test_bad_tle_names_the_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line_no: int,
    mutate: object,
    expected: str,
) -> None:
    line = TLE.read_text().splitlines()[line_no - 1]
    path = _write_tle(tmp_path, line_no, mutate(line))  # type: ignore[operator]
    code, _, err = _run(["passes", "--tle", str(path), "--station", XINGLONG], capsys)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--station", "40.4,117.6,abc"], "--station: station altitude is not a number: 'abc'"),
        (["--station", "95,117.6,0"], "--station: station latitude 95.0 outside [-90, 90]"),
        (["--station", "40.4"], "--station: station must be LAT,LON,ALT_M"),
        (["--station", XINGLONG, "--start", "yesterday"], "--start: not an ISO-8601"),
        (["--station", XINGLONG, "--hours", "-3"], "--hours must be in (0, 744]"),
        (["--station", XINGLONG, "--hours", "many"], "argument --hours: invalid float value"),
        (["--station", XINGLONG, "--satellite", "ISS"], "no satellite 'ISS'"),
    ],
)
def test_bad_arguments(capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    code, _, err = _run(["passes", "--tle", str(TLE), *args], capsys)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none.tle"
    code, _, err = _run(["passes", "--tle", str(missing), "--station", XINGLONG], capsys)
    assert code == 2
    assert f"--tle {missing}: No such file or directory" in err


def test_real_cli_process_bad_checksum(tmp_path: Path) -> None:
    line = TLE.read_text().splitlines()[2]
    path = _write_tle(tmp_path, 3, line[:68] + str((int(line[68]) + 1) % 10))
    proc = subprocess.run(
        [GROUNDKEY, "passes", "--tle", str(path), "--station", XINGLONG],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("groundkey passes: error: ")
    assert "line 3: bad checksum" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
