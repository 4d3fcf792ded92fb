"""Where a command starts: each module is one `wavegate` subcommand (parse, call, print)."""
