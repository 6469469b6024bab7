"""Look at what the scorer rejects: a world model's images of one relation, split into those the
scorer accepts and those it rejects, on validation pairs (never test prompts).

A scorer is checked on renders by `invrev world check-scorer`; this shows it on the model's own
drawings, where a rule can fail correct images (shake_hands' rule once rejected six of seven correct
handshakes for one blended pixel). Each row is one kind of prompt; rejected images come first,
framed grey, accepted ones framed green.

    python scripts/scorer_rejects.py --relation shake_hands --kinds handle swap --out docs/world_v2/rejects_shake_hands.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from invrev import measure
from invrev.demo import mosaic
from invrev.models import WORLD_MODEL, load_components_cached


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relation", required=True)
    p.add_argument("--kinds", nargs="+", default=["words"], help=f"kinds of prompt ({', '.join(measure.KINDS)})")
    p.add_argument("--model", default=WORLD_MODEL)
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG file")
    args = p.parse_args(argv)
    components = load_components_cached(args.model, "local")
    rows, counts = [], {}
    for kind in args.kinds:
        images, scores = measure.draw(components, measure.items(args.relation, kind, args.pairs, split="validation"),
                                      args.seed, args.samples)
        order = sorted(range(len(images)), key=lambda i: scores[i].relation)  # rejected first
        rows.append(mosaic([images[i] for i in order], [scores[i].relation for i in order], 1, len(order), scale=3))
        counts[kind] = (sum(s.relation for s in scores), len(scores))
        print(f"{args.relation} by {kind}: the scorer accepts {counts[kind][0]} of {counts[kind][1]} "
              f"(rejected first in its row)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    return counts


if __name__ == "__main__":
    main()
