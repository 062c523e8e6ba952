"""What a chained model's brain stage costs: the chain against its tissue network alone, end to end, in one run.

Usage: python bench/chain.py [--model DIR] [--repeats 5] [--device cpu] [--json bench/results/chain-cpu.json]

Issue 17's bounds: end to end on the MNI example at most 1.5x the single network's time on the same machine, and the
networks' FLOPs at most 2x. Each repeat runs `predict` on every volume (the MNI example, skull-stripped, and the
full-head example) with the chain and with the same tissue network unchained, interleaved, so that the machine's
noise falls on both; the figure to trust is the ratio of the medians. FLOPs are counted once per volume with torch's
FlopCounterMode on the grids each network actually sees. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.nn import functional  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from unet3d import Segmenter, load_volume  # noqa: E402
from unet3d.geometry import prepare  # noqa: E402

EXAMPLES = ROOT / "api" / "examples"
VOLUMES = (EXAMPLES / "mni152_t1.nii.gz", EXAMPLES / "fullhead_t1.nii.gz")


def seconds(segmenter: Segmenter, volume: Path) -> float:
    started = time.perf_counter()
    segmenter.predict(volume)
    return time.perf_counter() - started


def gflops(segmenter: Segmenter, volume: Path) -> float:
    """The network's FLOPs for one whole pass over the grid it sees for `volume` (padded as inference pads it)."""
    array = prepare(load_volume(volume), segmenter.card).array
    multiple = segmenter.card.input.pad_to_multiple
    pads = [(-size) % multiple for size in array.shape]
    array = functional.pad(array, (0, pads[2], 0, pads[1], 0, pads[0]))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        segmenter.model.eval()(array[None, None])
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "unet3d-brain-tissue"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()

    chain = Segmenter.from_pretrained(args.model, device=args.device)
    if chain.brain_mask is None:
        parser.error(f"{args.model} is not a chained model (no brain_mask/)")
    single = Segmenter(chain.model, chain.card, chain.source, device=args.device)  # the tissue network alone
    result: dict[str, Any] = {"model": args.model, "device": args.device, "repeats": args.repeats, "volumes": {}}
    for volume in VOLUMES:
        stage, tissue = gflops(chain.brain_mask, volume), gflops(chain, volume)
        chain.predict(volume), single.predict(volume)  # warm-up: first-call allocations
        times: dict[str, list[float]] = {"chain_s": [], "single_s": []}
        for _ in range(args.repeats):
            times["chain_s"].append(seconds(chain, volume))
            times["single_s"].append(seconds(single, volume))
        medians = {key: round(statistics.median(values), 3) for key, values in times.items()}
        result["volumes"][volume.name] = {
            **medians,
            "time_ratio": round(medians["chain_s"] / medians["single_s"], 3),
            "brain_stage_gflop": round(stage, 1),
            "tissue_gflop": round(tissue, 1),
            "flop_ratio": round((stage + tissue) / tissue, 3),
        }
    mni = result["volumes"][VOLUMES[0].name]
    result["meets_bounds"] = mni["time_ratio"] <= 1.5 and mni["flop_ratio"] <= 2.0
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
