"""One module per ``ufm`` subcommand: argument parsing and delegation only."""
