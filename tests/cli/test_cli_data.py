"""`sidda data make` options: bounded counts and seeds, refused before anything is drawn."""

import pytest

from sidda.cli import main
from sidda.cli.data_commands import MAX_N_PER_CLASS


@pytest.mark.parametrize("args, says", [
    (["--n-per-class", "10000000000"], f"--n-per-class must lie in 2..{MAX_N_PER_CLASS} "),
    (["--n-per-class", str(MAX_N_PER_CLASS + 1)], "--n-per-class must lie in"),
    (["--n-per-class", "1"], "--n-per-class must lie in 2.."),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
])
def test_data_make_bounds_exit_2_naming_the_option(tmp_path, capsys, args, says):
    assert main(["data", "make", "shapes", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error: ") and says in err[0], err
    assert not (tmp_path / "d").exists()


def test_data_make_at_the_lower_bound_works(tmp_path):
    assert main(["data", "make", "shapes", "--out", str(tmp_path / "d"), "--n-per-class", "2",
                 "--image-size", "20", "-q"]) == 0
    assert (tmp_path / "d" / "manifest.json").is_file()
