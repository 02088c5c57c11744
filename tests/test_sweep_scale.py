"""How the work of a sweep grows with its runs: the study is opened a fixed number of times, not once
per result shown (each open replays a journal file or makes a new database connection pool)."""

import pytest
from conftest import make_dataset

from cnnlab import preset, studies, sweep
from cnnlab.sweep import running, state, summary


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sweep-scale") / "ds", 10, 4)


@pytest.fixture
def opens(monkeypatch):
    """Counts the studies opened through cnnlab.sweep (by its modules that open one)."""
    count = [0]

    def counted(*args, **kwargs):
        count[0] += 1
        return studies.open_study(*args, **kwargs)

    for module in (running, state, summary):
        monkeypatch.setattr(module, "open_study", counted)
    return count


def tiny(dataset: str):
    return preset(
        "fast",
        data=dataset,
        epochs=1,
        batch_size=8,
        eval_batch_size=64,
        threads=1,
        schedule="constant",
        warmup_epochs=0.0,
        tta=False,
        log="none",
    )


def test_results_open_the_study_once(dataset, tmp_path, opens):
    out = str(tmp_path / "sw")
    base = tiny(dataset).replace(progress=False)
    sweep.run_sweep(out, base, {"lr": [0.01, 0.02]}, 1, progress=False)
    opens[0] = 0
    res = sweep.results(out)
    assert opens[0] == 1
    assert [r["val"]["n"] for r in res["rows"]] == [1, 1]


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_sweep_showing_its_table_opens_the_study_a_fixed_number_of_times(dataset, tmp_path, opens, capsys, seeds):
    # progress=True prints the results table after every training: 2 and 4 trainings, the same opens
    out = str(tmp_path / "sw")
    res = sweep.run_sweep(out, tiny(dataset), {"lr": [0.01, 0.02]}, seeds, progress=True)
    assert [r["val"]["n"] for r in res["rows"]] == [seeds, seeds]
    assert capsys.readouterr().out.count("chosen on validation") == 2 * seeds  # the table after each training
    assert opens[0] == 3  # create_sweep, the worker, the table's own (reused for every table and the last)
