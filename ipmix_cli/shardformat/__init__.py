"""The shard format: the contract between the writer (`ipmix_cli.shards`) and every reader
(`ipmix_cli.stream`, `shards verify/inspect/preview`, the `wds:` source).

- `fields`: the members of a sample and the table of image formats;
- `formats`: encoding and decoding one image, the format chosen per size;
- `decode`: decoding the images of many samples at once (Numba);
- `manifest`: the manifest's schema, versions and file name;
- `tarwriter`: the deterministic ustar writer;
- `tario`: the streaming tar reader and its one sample iterator;
- `tarscan`: its fast path, a Numba scan of a whole shard held in memory.

Importing the package imports none of them, so each user pays only for what it reads.
"""
