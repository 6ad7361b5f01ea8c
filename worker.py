"""Temporal worker entry point from a checkout: `python worker.py` is `aicd worker` (see aicd/worker.py)."""

from aicd.worker import main

if __name__ == "__main__":
    main()
