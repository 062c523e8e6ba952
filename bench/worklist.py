"""The worklist with 10 000 cases on SQLite: how long one page takes, in the store and over HTTP.

Usage: python bench/worklist.py [--cases 10000] [--reviewed 2000] [--repeats 40] [--json OUT]

1. Fill a fresh SQLite database (in a temp folder) through the real code: `CaseService.prepare_case` stores one
   small volume and mask (content addressing stores them once), `CaseStore.create_cases` inserts the cases in
   transactions of 500, and `record_review` gives --reviewed of them a verdict (three reviewers, all verdicts).
2. Store: `CaseStore.list_cases` for the queries the worklist makes (first page, unreviewed only, newest first, one
   reviewer's, the last page), --repeats times each, in turn.
3. HTTP: the same queries as `GET /v1/cases` against a real uvicorn process on that database.
Target: p95 under 200 ms for every query, store and HTTP (issue 19). Prints one JSON object (and writes --json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service import start_server  # noqa: E402  (bench/ is on sys.path when run as a script)

from api.cases.service import CaseService, Provenance  # noqa: E402
from api.cases.store import CaseQuery  # noqa: E402
from api.settings import Settings  # noqa: E402
from unet3d.io import load_volume  # noqa: E402

MODEL = ROOT / "models" / "unet3d-brain-tissue"
QUERIES: dict[str, dict[str, Any]] = {
    "first page": {},
    "unreviewed": {"status": "unreviewed"},
    "newest first": {"sort": "-updated"},
    "one reviewer": {"reviewer": "reviewer1", "sort": "-updated"},
    "last page": {"offset": 9950},
}
TARGET_MS = 200.0


def fill(service: CaseService, folder: Path, *, count: int, reviewed: int) -> None:
    """`count` cases (one volume and mask, stored once), `reviewed` of them with a verdict."""
    volume_path, mask_path = folder / "v.nii.gz", folder / "m.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(32, 32, 24)).astype(np.float32), np.eye(4)), volume_path)
    labels = np.zeros((32, 32, 24), np.uint8)
    labels[8:24, 8:24, 6:18] = 1
    labels[12:20, 12:20, 9:15] = 2
    nib.save(nib.Nifti1Image(labels, np.eye(4)), mask_path)
    volume = load_volume(volume_path)
    template = service.prepare_case(
        volume_path, volume, labels, name="template", classes=["background", "grey matter", "white matter"],
        provenance=Provenance(author="bench", source="import", qc_warnings=("low contrast",)),
    )  # fmt: skip
    for start in range(0, count, 500):
        batch = [replace(template, name=f"case-{i:05d}") for i in range(start, min(start + 500, count))]
        service.store.create_cases(batch)
    verdicts = ("accepted", "needs_correction", "rejected")
    for case_id in rng.choice(np.arange(1, count + 1), size=reviewed, replace=False).tolist():
        service.store.record_review(
            case_id, 1, verdict=verdicts[case_id % 3], score=1 + case_id % 5, note="", reviewer=f"reviewer{case_id % 3}"
        )


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def measure(call: Any, repeats: int) -> dict[str, dict[str, float]]:
    """Run every query `repeats` times, round-robin (so that machine noise hits all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    for params in QUERIES.values():
        call(params)  # warm-up
    for _ in range(repeats):
        for name, params in QUERIES.items():
            started = time.perf_counter()
            call(params)
            times[name].append(time.perf_counter() - started)
    return {name: percentiles(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--reviewed", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unet3d-worklist-") as work:
        workdir = Path(work)
        service = CaseService.open(Settings(data_dir=workdir / "data"))
        started = time.perf_counter()
        fill(service, workdir, count=args.cases, reviewed=args.reviewed)
        fill_s = time.perf_counter() - started
        store = measure(lambda params: service.store.list_cases(CaseQuery(**params)), args.repeats)
        service.close()
        process, url = start_server(MODEL, workdir)
        try:
            with httpx.Client(base_url=url, timeout=60) as client:

                def get(params: dict[str, Any]) -> None:
                    answer = client.get("/v1/cases", params=params)
                    answer.raise_for_status()

                http = measure(get, args.repeats)
        finally:
            process.terminate()
            process.wait(timeout=30)
    worst = max(row["p95_ms"] for row in [*store.values(), *http.values()])
    result = {
        "cases": args.cases, "reviewed": args.reviewed, "repeats": args.repeats, "fill_s": round(fill_s, 1),
        "store": store, "http": http, "worst_p95_ms": worst, "target_p95_ms": TARGET_MS, "pass": worst < TARGET_MS,
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
