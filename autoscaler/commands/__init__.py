"""One module per command of `autoscaler`: each declares its flags (`add_parser`, from the settings
models through `_flags`) and turns them into running parts and back into an exit code (`run`).
`autoscaler.cli` builds the one parser from them; a command imports its heavy parts only when it runs."""
