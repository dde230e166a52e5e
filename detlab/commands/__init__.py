"""CLI commands that are not part of training (``detlab check-data``). Each module defines
``add_command(subparsers)`` and is listed in :data:`detlab.cli.COMMAND_MODULES`."""
