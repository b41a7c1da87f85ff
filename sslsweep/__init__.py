"""sslsweep: fair hyperparameter search and comparison of self-supervised pretext tasks."""

__version__ = "0.1.0"
