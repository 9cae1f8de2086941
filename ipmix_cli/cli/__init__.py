"""The `ipmix` command: every click command lives here, and no other package imports click."""
