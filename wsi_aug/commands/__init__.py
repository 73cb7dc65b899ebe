"""The CLI's commands, one module per group of stages; each stays a thin layer over the library."""
