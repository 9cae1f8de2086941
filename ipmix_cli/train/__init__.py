"""Training on shards: the loop (`loop.py`), checkpoints, losses, models and the device.
Imports torch; nothing here imports `ipmix_cli.eval`."""
