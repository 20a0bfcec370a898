"""One thin module per `clipvis` subcommand: parse the arguments, call one function, print the result."""
