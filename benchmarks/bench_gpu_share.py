"""Does a second training process on one GPU add throughput? N processes time the training step at once.

    python benchmarks/bench_gpu_share.py --processes 1 2 4 --batch-size 512

Each process runs `bench_train.images_per_second` (DRConv-MobileFaceNet m=8, channels-last, bf16 autocast, 40
timed steps after a warm-up) on the same GPU at the same time; prints each process's images/s and their sum.
A sum that does not grow with N means the GPU is already busy with one run: side-by-side runs (an ablation)
then share it, each at about 1/N of the single-run speed. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

import torch


def _worker(batch_size: int, steps: int, results: mp.Queue) -> None:
    from benchmarks.bench_train import images_per_second

    torch.set_num_threads(2)
    device = torch.device("cuda")
    images_per_second(True, 8, batch_size, 3, device, True)  # warm-up: kernels, allocator
    results.put(images_per_second(True, 8, batch_size, steps, device, True)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    context = mp.get_context("spawn")
    for count in args.processes:
        results = context.Queue()
        workers = [
            context.Process(target=_worker, args=(args.batch_size, args.steps, results)) for _ in range(count)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates = [results.get() for _ in workers]
        each = ", ".join(f"{rate:.0f}" for rate in rates)
        total = sum(rates)
        print(f"{count} process(es), batch {args.batch_size}: {each} img/s each, {total:.0f} img/s in all")


if __name__ == "__main__":
    main()
