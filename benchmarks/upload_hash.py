"""Benchmark the sha256 that resumable uploads compute on the way in: MB/s per core.

    .venv/bin/python benchmarks/upload_hash.py             # 512 MB in 4 MiB chunks (the page's chunk size)
    .venv/bin/python benchmarks/upload_hash.py --mb 64

Each chunk restores the hash state from bytes and saves it again, as ``upload_chunk_append`` does
between requests (rehashes, so any web process can take the next chunk). hashlib over the same
bytes in one process is printed for comparison.
"""

import argparse
import hashlib
import os
import time

from rehashes import PySha256

CHUNK = 4 << 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=512)
    args = parser.parse_args()
    block = os.urandom(CHUNK)
    chunks = max(1, args.mb * 1_000_000 // CHUNK)
    started, state = time.perf_counter(), PySha256().serialize()
    for _ in range(chunks):
        hasher = PySha256.deserialize(state)
        hasher.update(block)
        state = hasher.serialize()
    resumable = PySha256.deserialize(state).finalize()
    seconds = time.perf_counter() - started
    started, plain = time.perf_counter(), hashlib.sha256()
    for _ in range(chunks):
        plain.update(block)
    plain_seconds = time.perf_counter() - started
    assert resumable == plain.hexdigest()
    megabytes = chunks * CHUNK / 1e6
    print(f"{megabytes:.0f} MB in {chunks} chunks of 4 MiB, state {len(state)} bytes")
    print(f"resumable (rehashes, state saved per chunk): {megabytes / seconds:.0f} MB/s")
    print(f"hashlib (one process, for comparison):        {megabytes / plain_seconds:.0f} MB/s")


if __name__ == "__main__":
    main()
