"""A real two-method sweep through Ray Tune on tiny data: Parquet rows, Optuna states, report."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sslsweep.config import from_dictconfig
from sslsweep.pipeline import run_sweep

pytestmark = pytest.mark.slow

MAX_EPOCHS = 3


@pytest.fixture(scope="module")
def sweep_dir(ray_local, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    storage = tmp_path_factory.mktemp("runs")
    overrides = ["experiment=smoke", "method=[simclr,rotation]", f"storage={storage}", "search.num_samples=4",
                 f"search.max_epochs={MAX_EPOCHS}", "search.grace_period=1", "search.reduction_factor=2",
                 "dataset.labels_per_class=[2]", "eval.compare=[oracle,label_free]"]
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        raw = compose(config_name="config", overrides=overrides)
    uri = run_sweep(from_dictconfig(raw), OmegaConf.to_container(raw, resolve=True))
    return Path(uri)


def test_sweep_writes_every_artifact(sweep_dir: Path) -> None:
    """The sweep directory holds the two tables, the manifest, the Optuna journals, Tune's dir and the report."""
    for name in ("trials.parquet", "budget.parquet", "manifest.json", "report.md", "report.html",
                 "optuna/simclr.journal", "optuna/rotation.journal", "tune/search-simclr", "tune/confirm-simclr",
                 "tune/confirm-rotation"):
        assert (sweep_dir / name).exists(), name


def test_trials_table_has_one_row_per_report_and_honest_status(sweep_dir: Path) -> None:
    """num_samples trials per method; rows at consecutive epochs without duplicates; a trial is
    'completed' exactly when it reached max_epochs, else 'stopped'; hyperparameters are columns and
    temperature is null for rotation."""
    t = pd.read_parquet(sweep_dir / "trials.parquet")
    assert t.groupby("method")["trial_id"].nunique().to_dict() == {"rotation": 4, "simclr": 4}
    assert not t.duplicated(["trial_id", "epoch"]).any()
    for _, g in t.groupby("trial_id"):
        assert g["epoch"].tolist() == list(range(1, len(g) + 1))
        expected = "completed" if g["epoch"].max() == MAX_EPOCHS else "stopped"
        assert set(g["status"]) == {expected}
    assert (t["metric"] == t["score_label_free"]).all() and (t["metric"] >= 1).all()  # RankMe: the search's metric
    assert t["score_oracle"].between(0, 1).all()
    for budget in ("fraction_0.1", "fraction_1", "per_class_2"):  # 2 labels per class: held out one by one
        for seed in (0, 1):  # one score per confirm seed: each seed draws its own labelled subset
            assert t[f"score_budget_{budget}_s{seed}"].between(0, 1).all(), (budget, seed)
    assert t.loc[t.method == "rotation", "hp_temperature"].isna().all()
    assert t.loc[t.method == "simclr", "hp_temperature"].notna().all()
    assert t.loc[t.method == "rotation", "pretext_acc"].notna().all()


def test_optuna_studies_match_the_trials_table(sweep_dir: Path) -> None:
    """Each method's persisted study has num_samples trials: PRUNED for stopped ones, COMPLETE for completed."""
    t = pd.read_parquet(sweep_dir / "trials.parquet")
    for method in ("simclr", "rotation"):
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna" / f"{method}.journal")))
        study = optuna.load_study(study_name=method, storage=storage)
        states = sorted(tr.state.name for tr in study.trials)
        status = t[t.method == method].groupby("trial_id")["status"].first()
        expected = sorted({"completed": "COMPLETE", "stopped": "PRUNED"}[s] for s in status)
        assert states == expected


def test_budget_table_covers_methods_seeds_budgets_protocols(sweep_dir: Path) -> None:
    """Confirm phase, for each selection rule: 2 methods x 2 seeds x 3 budgets x 2 protocols; the
    same labeled subset size for every method at a budget and seed; accuracies in [0, 1]; the
    source trial is a search trial."""
    every = pd.read_parquet(sweep_dir / "budget.parquet")
    t = pd.read_parquet(sweep_dir / "trials.parquet")
    assert every.groupby("chosen_by").size().to_dict() == {rule: 2 * 2 * 3 * 2 for rule in ("budget", "label_free", "oracle")}
    b = every[every.chosen_by == "budget"]
    assert set(b.protocol) == {"linear", "finetune"} and set(b.seed) == {0, 1}
    assert b.groupby(["budget_kind", "budget", "seed"])["n_labels"].nunique().eq(1).all()
    per_class = b[b.budget_kind == "per_class"]
    assert (per_class["n_labels"] == 2 * 10).all()
    assert b[["val_acc", "test_acc"]].stack().between(0, 1).all()
    assert set(every.source_trial_id) <= set(t.trial_id)
    assert (every.pretrain_epochs == MAX_EPOCHS).all()


def _best(final: pd.DataFrame, column: str) -> str:
    """The completed trial with the highest ``column`` (ties: higher metric, then smaller id)."""
    return str(final.sort_values([column, "metric", "trial_id"], ascending=[False, False, True]).trial_id.iloc[0])


def test_each_rule_confirms_the_trial_its_own_signal_ranks_first(sweep_dir: Path) -> None:
    """At every budget and seed, the configuration each rule retrained is the completed trial its
    signal ranks first: oracle by the validation kNN, label_free by RankMe, budget by the
    leave-one-out kNN inside that budget's labelled subset at that seed. A run chosen by several
    rules is trained once."""
    t = pd.read_parquet(sweep_dir / "trials.parquet")
    b = pd.read_parquet(sweep_dir / "budget.parquet")
    final = t[(t.status == "completed")].sort_values("epoch").groupby("trial_id").tail(1)
    assert set(b.method) == set(final.method) == {"simclr", "rotation"}
    for (method, kind, budget, rule, seed), g in b.groupby(["method", "budget_kind", "budget", "chosen_by", "seed"]):
        mine = final[final.method == method]
        column = {"oracle": "score_oracle", "label_free": "score_label_free"}.get(
            rule, f"score_budget_{kind}_{budget:g}_s{seed}")
        assert set(g.source_trial_id) == {_best(mine, column)}, (method, kind, budget, rule, seed)
    runs = b.groupby(["method", "source_trial_id", "seed"])["trial_id"].nunique()
    assert (runs == 1).all()  # one confirm trial per chosen configuration and seed, whatever chose it
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert len(manifest["choices"]) == 2 * 3 * 3 * 2  # methods x rules x budgets x seeds


def test_manifest_records_provenance(sweep_dir: Path) -> None:
    """manifest.json: config, spaces, versions, dataset fingerprint, seeds, phases and cost per method."""
    m = json.loads((sweep_dir / "manifest.json").read_text())
    assert m["config"]["search"]["max_epochs"] == MAX_EPOCHS
    assert set(m["spaces"]) == {"simclr", "rotation"} and "temperature" in m["spaces"]["simclr"]
    assert {"torch", "ray", "optuna"} <= set(m["versions"])
    assert len(m["dataset"]["fingerprint"]) == 32 and m["seeds"]["confirm"] == [0, 1]
    assert m["finished"] and {"search", "confirm"} <= set(m["phases"])
    assert set(m["cost"]) == {"simclr", "rotation"} and m["cost"]["simclr"]["search_wall_s"] > 0


def test_report_shows_methods_budgets_and_plot(sweep_dir: Path) -> None:
    """report.md names both methods and the budgets; report.html embeds its plots."""
    md = (sweep_dir / "report.md").read_text()
    html = (sweep_dir / "report.html").read_text()
    for text in ("simclr", "rotation", "10%", "100%", "2/class"):
        assert text in md, text
    assert 'src="data:image/png;base64,' in html and "simclr" in html
