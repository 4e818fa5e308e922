"""One module per subcommand of `autoscaler`: each turns settings into running parts and back into an
exit code. `autoscaler.cli` builds the parser and imports a command's module only when it runs."""
