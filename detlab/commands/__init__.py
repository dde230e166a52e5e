"""CLI commands that are not part of the training core (``detlab check-data``, ``show-data``,
``anchors``, the CT-volume part of ``predict`` …). Each command module defines
``add_command(subparsers)`` and is listed in :data:`detlab.cli.COMMAND_MODULES`."""
