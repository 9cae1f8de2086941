"""Training on shards: the loop (`loop.py`) and its configuration (`config.py`), checkpoints,
losses, models, the device and the processes, the logs. Imports torch; nothing here imports
`ipmix_cli.eval`. `from ipmix_cli.train import train` loads the loop when first asked for."""


def __getattr__(name):
    if name in ("train", "TrainConfig"):
        from ipmix_cli.train import loop

        return getattr(loop, name)
    raise AttributeError(name)


__all__ = ["train", "TrainConfig"]
