"""``python -m sslsweep.cli ...`` (the entrypoint of a submitted Ray job)."""

from sslsweep.cli import main

main()
