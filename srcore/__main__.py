"""``python -m srcore``: the ``srcore`` command when its console script is not installed."""

from srcore.cli import main

if __name__ == "__main__":  # pragma: no cover - run as a child process
    main()
