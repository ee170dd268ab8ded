"""What flip averaging buys: CFP accuracy with and without it, and the network time it costs, in one run.

The service embeds a face as normalise(f(x) + f(mirror of x)): two network images per face. Here, on CFP's
7,000 photos aligned as `drface eval` aligns them (training.validate.AlignedCfp, cached as .npy under
--cache-dir), the network's features of every face and of its mirror are computed once, in batches; from them
both embeddings, f(x) alone and f(x) + f(mirror), are scored with the evaluation's own code
(training.scoring.evaluate_embeddings: 10 folds, threshold chosen on the other nine) on CFP-FF and CFP-FP.
Then the network's time per /v1/embed face at batch 1 (image + mirror as one batch of 2, as served, vs the
image alone), alternating, with the service's threads and traced network (DRFACE_TORCH_THREADS to change).

    python benchmarks/bench_flip.py --cache-dir ../gpu/cache
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from drface_steps import DrfaceSteps  # noqa: E402
from load_test import default_data_root, load_average  # noqa: E402

from training.scoring import evaluate_embeddings  # noqa: E402
from training.validate import AlignedCfp  # noqa: E402


def features(steps: DrfaceSteps, faces: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw network features (N, D) of the faces and of their mirror images."""
    plain, mirrored = [], []
    with torch.inference_mode():
        for start in range(0, len(faces), batch_size):
            batch = steps.tensor(list(faces[start : start + batch_size]))
            both = steps.network_module(torch.cat([batch, torch.flip(batch, dims=[3])])).float().numpy()
            plain.append(both[: len(batch)])
            mirrored.append(both[len(batch) :])
    return np.concatenate(plain), np.concatenate(mirrored)


def network_ms(steps: DrfaceSteps, face: np.ndarray, repeats: int) -> dict[bool, tuple[float, float]]:
    """{flip: (median wall ms, median CPU ms)} of one face through the network, alternating the two."""
    batch = steps.tensor([face])
    samples: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(repeats + 10):  # the first 10 warm the trace up
        for flip in (True, False):
            wall, cpu = time.perf_counter(), time.process_time()
            steps.network(batch, flip=flip)
            if i >= 10:
                samples[flip].append(
                    ((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000)
                )
    return {flip: tuple(np.median(values, axis=0)) for flip, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding cfp/")
    parser.add_argument("--cache-dir", type=Path, help="aligned CFP crops cache (.npy); none: align now")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50, help="timed network calls per variant")
    args = parser.parse_args(argv)
    print(f"load average before: {load_average()}", flush=True)
    steps = DrfaceSteps()
    cfp = AlignedCfp(args.data_root / "cfp", ["FF", "FP"], args.cache_dir, args.batch_size)
    faces = cfp.faces()
    start = time.perf_counter()
    plain, mirrored = features(steps, faces, args.batch_size)
    print(f"{len(faces)} faces x 2 through the network in {time.perf_counter() - start:.0f} s", flush=True)
    print("\n| embedding | CFP-FF accuracy % | CFP-FP accuracy % | CFP-FF AUC | CFP-FP AUC |")
    print("| --- | --- | --- | --- | --- |")
    for label, embeddings in (("f(x) + f(mirror) (served)", plain + mirrored), ("f(x) alone", plain)):
        cells = []
        for protocol in cfp.protocols.values():  # cfp_ff, cfp_fp
            report = evaluate_embeddings(embeddings, protocol.pairs, protocol.labels, protocol.folds)
            cells.append((report["accuracy"], report["accuracy_std"], report["auc"]))
        (ff, ff_std, ff_auc), (fp, fp_std, fp_auc) = cells
        print(
            f"| {label} | {100 * ff:.2f} ± {100 * ff_std:.2f} | {100 * fp:.2f} ± {100 * fp_std:.2f} "
            f"| {ff_auc:.4f} | {fp_auc:.4f} |"
        )
    print(f"load average: {load_average()}", flush=True)
    timed = network_ms(steps, faces[0], args.repeats)
    print(f"\nnetwork per face at batch 1, {args.repeats} alternating calls each, median (wall ms, CPU ms):")
    for flip, (wall, cpu) in timed.items():
        print(f"  {'image + mirror (batch 2)' if flip else 'image alone (batch 1)'}: {wall:.1f}, {cpu:.1f}")
    (flip_wall, flip_cpu), (plain_wall, plain_cpu) = timed[True], timed[False]
    print(f"  without flip: {flip_wall / plain_wall:.2f}x less wall, {flip_cpu / plain_cpu:.2f}x less CPU")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
