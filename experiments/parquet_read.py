"""Reading a large interactions Parquet file whole vs row group by row group: time and peak memory.

    python experiments/parquet_read.py runs/scale/items10000000x10/interactions.parquet

``whole`` is mmrec's reader (``mmrec.data.schema.read_table``: the table read at once, each string id
column dictionary-encoded in one pass). ``row_groups`` streams the row groups, dictionary-encodes each
batch's ids and unifies the dictionaries (``pa.Table.unify_dictionaries``). Each way runs in its own
process, so each peak resident set is its own. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def read(path: str, way: str) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mmrec.data.schema import ID_COLUMNS, read_table

    start = time.perf_counter()
    if way == "whole":
        frame = read_table(path)
    else:
        batches = []
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20):
            for name in ID_COLUMNS:
                if name in batch.schema.names:
                    column = pc.dictionary_encode(batch.column(name))
                    batch = batch.set_column(batch.schema.get_field_index(name), name, column)
            batches.append(batch)
        table = pa.Table.from_batches(batches).unify_dictionaries()
        del batches
        frame = table.to_pandas()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports kB
    return {"way": way, "rows": len(frame), "seconds": seconds, "peak_gb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--way", choices=["whole", "row_groups"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    if args.way:
        print(json.dumps(read(args.path, args.way)))
        return
    print("| read | rows | seconds | peak GB |\n|---|---|---|---|")
    for way in ("whole", "row_groups"):
        out = subprocess.run(
            [sys.executable, __file__, args.path, "--way", way], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['way']} | {r['rows']:,} | {r['seconds']:.1f} | {r['peak_gb']:.2f} |")


if __name__ == "__main__":
    main()
