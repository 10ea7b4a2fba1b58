"""One module per `triform` subcommand."""
