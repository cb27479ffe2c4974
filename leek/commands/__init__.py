"""The subcommands of `manage.py leek`, one module each.

Run in the shell that runs `manage.py leek <subcommand>` (`serve`, the default, is the
server process itself). Each module has `add_arguments(parser)` and `run(command, options)`;
leek.management.commands.leek parses the command line and calls the one named. Failures are
`CommandError`s whose `returncode` a health check or a script can trust.
"""
