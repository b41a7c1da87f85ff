"""Search: spaces, the Optuna searcher, Tuner assembly, the sweep pipeline and job submission (imports Ray)."""
