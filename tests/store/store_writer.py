"""Writer process for the durability tests: records cloaks one transaction at a time and
prints `ACK <cloak id>` after each commit (so the parent knows what was acknowledged)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import sys

import numpy as np


async def main(url: str, owner: str, n: int, tag: str) -> None:
    from faceprov.store.db import Database
    from faceprov.store.repo import FaceInput, Repo

    repo = Repo(Database(url))
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    print("READY", flush=True)
    for i in range(n):
        v = rng.standard_normal(128).astype(np.float32)
        res = await repo.record_cloak(
            owner=owner, model_name="nullswap", model_version="0.1", strength=0.5,
            input_sha256=hashlib.sha256(f"{tag}-in-{i}".encode()).hexdigest(),
            output_sha256=hashlib.sha256(f"{tag}-out-{i}".encode()).hexdigest(),
            pdq=os.urandom(32).hex(),
            faces=[FaceInput(label=f"{tag}-{i}", box=(0, 0, 10, 10),
                             embeddings={"dlib@19.24": v})],
            report={"writer": tag, "i": i})
        sys.stdout.write(f"ACK {res.id}\n")
        sys.stdout.flush()
    await repo.db.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
