"""`infersight replay`: the command and the readers of a recording's GPU and engine files."""
