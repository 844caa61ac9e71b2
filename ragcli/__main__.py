"""`python -m ragcli` behaves exactly like the `ragcli` command."""

from ragcli.cli.app import main

if __name__ == "__main__":
    main()
