"""Peak memory of `teramind ingest table` on a transcript table several times larger than a memory budget.

Writes a Parquet (or CSV) table on disk whose in-memory pandas size (x, y float64, z int64, gene str) is at least
`--factor` x `--budget-mb`, ingests it with `teramind ingest table` in a subprocess and prints that process's
peak RSS (VmHWM) against the budget, next to the peak RSS of a bare import of what ingest uses.
`--naive` also measures `pandas.read_parquet` of the whole table (what not chunking would need).

    python benchmarks/ingest_memory.py --budget-mb 400 --factor 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

WRITE_ROWS = 1_000_000


# Runs a statement, then prints the process's VmHWM: the peak RSS of its own address space since exec (unlike
# ru_maxrss, which Linux carries over from the parent that forked it).
PEAK = (
    "import sys\nexec(sys.argv[1])\n"
    "print('VmHWM_KB', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr)"
)


def child_peak_rss_mb(statement: str, argv: list[str] = ()) -> tuple[float, float, str]:
    """(peak RSS MB, seconds, stdout) of `statement` run in a fresh Python process."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK, statement, *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{statement} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    peak_kb = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VmHWM_KB"))
    return peak_kb / 1024, seconds, proc.stdout


def bytes_per_row(genes: list[str]) -> float:
    sample = make_rows(np.random.default_rng(0), 100_000, genes, 4096, 4)
    return sample.memory_usage(deep=True).sum() / len(sample)


def make_rows(rng: np.random.Generator, n: int, genes: list[str], side: int, sections: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.uniform(0, side, n),
            "y": rng.uniform(0, side, n),
            "z": rng.integers(0, sections, n),
            "gene": np.asarray(genes, dtype=object)[rng.integers(0, len(genes), n)],
        }
    )


def write_table(path: Path, rows: int, genes: list[str], side: int, sections: int) -> None:
    """Write `rows` random transcripts in slices of WRITE_ROWS (this script stays small too)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    writer = None
    for start in range(0, rows, WRITE_ROWS):
        frame = make_rows(rng, min(WRITE_ROWS, rows - start), genes, side, sections)
        if path.suffix == ".csv":
            frame.to_csv(path, mode="a", header=start == 0, index=False)
            continue
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-mb", type=float, default=400.0)
    parser.add_argument("--factor", type=float, default=4.0, help="table in-memory size / budget")
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv"))
    parser.add_argument("--batch-rows", type=int, default=None, help="default: from the budget (--memory-mb)")
    parser.add_argument("--buffer-bins", type=int, default=None, help="default: from the budget (--memory-mb)")
    parser.add_argument("--side", type=int, default=4096, help="canvas edge in px")
    parser.add_argument("--sections", type=int, default=4)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--naive", action="store_true", help="also measure reading the whole table with pandas")
    args = parser.parse_args()

    from teramind_hf.data.panel import GenePanel

    genes = list(GenePanel.official_mouse().genes)
    per_row = bytes_per_row(genes)
    rows = int(np.ceil(args.factor * args.budget_mb * 2**20 / per_row))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ingest_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    table = work / f"transcripts.{args.format}"
    if not table.exists():
        print(f"writing {rows:,} rows ({per_row:.0f} B/row in pandas) to {table} ...", flush=True)
        write_table(table, rows, genes, args.side, args.sections)
    elif args.format == "parquet":  # a table from an earlier run is reused: count its own rows
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(table).metadata.num_rows
    else:
        with open(table, "rb") as file:
            rows = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(2**24), b"")) - 1
    in_memory_mb = rows * per_row / 2**20
    # what pandas makes of the file itself (its reader may pick wider dtypes than the sample above)
    if args.format == "csv":
        head = pd.read_csv(table, nrows=100_000)
    else:
        import pyarrow.parquet as pq

        head = pq.ParquetFile(table).read_row_group(0).to_pandas()
    read_mb = rows * head.memory_usage(deep=True).sum() / len(head) / 2**20
    print(f"table: {rows:,} rows, {in_memory_mb:,.0f} MB as a pandas DataFrame built in memory, {read_mb:,.0f} MB as "
          f"pandas reads the file ({min(in_memory_mb, read_mb) / args.budget_mb:.1f}x the {args.budget_mb:.0f} MB budget "
          f"or more), {table.stat().st_size / 2**20:,.0f} MB on disk")

    baseline, _, _ = child_peak_rss_mb("import numpy, pandas, pyarrow.parquet, zarr, tqdm, teramind_hf.data.ingest")
    store = work / "genes.zarr"
    peak, seconds, out = child_peak_rss_mb(
        "from teramind_hf.cli import main; main(sys.argv[2:])",
        ["ingest", "table", str(table), "--out", str(store), "--um-per-px", "0.5", "--memory-mb", str(args.budget_mb),
         *(["--batch-rows", str(args.batch_rows)] if args.batch_rows else []),
         *(["--buffer-bins", str(args.buffer_bins)] if args.buffer_bins else []), "--overwrite", "--quiet"],
    )
    print(out.strip())
    import zarr

    total = float(zarr.open_group(str(store), mode="r")["genes"][...].sum(dtype=np.float64))
    print(f"counts in the store: {total:,.0f} (rows {rows:,}: {'equal' if total == rows else 'DIFFERENT'})")
    print(f"peak RSS of `teramind ingest table`: {peak:,.0f} MB = {peak / args.budget_mb:.2f} x budget "
          f"({'under' if peak < args.budget_mb else 'OVER'} {args.budget_mb:.0f} MB); bare imports {baseline:,.0f} MB; "
          f"{seconds:.0f} s")
    if args.naive:
        reader = "pandas.read_parquet" if args.format == "parquet" else "pandas.read_csv"
        naive, _, _ = child_peak_rss_mb(f"import pandas; {reader}({str(table)!r})")
        print(f"peak RSS of {reader} on the whole table: {naive:,.0f} MB = {naive / args.budget_mb:.2f} x budget")


if __name__ == "__main__":
    main()
