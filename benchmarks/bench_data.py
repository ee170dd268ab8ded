"""Data path vs model: images/s decoded + augmented per worker, against training images/s, in one process.

    drface pack runs/.cache/aligned/faces94 /tmp/faces94.rec
    python benchmarks/bench_data.py --data /tmp/faces94.rec --batch-size 64 --steps 4 --threads 2

Measures, on the same machine and in this order:
1. one worker's rate: `StreamingBatches` items (read record/file -> decode -> augment, torch and OpenCV on one
   thread, as in a DataLoader worker), run in this process: images/s per worker; also decode alone;
2. the DataLoader with `--workers` processes feeding an idle consumer: images/s the data path can supply;
3. the model's training step (DRConv-MobileFaceNet m=8, channels-last, ArcFace head, SGD, the shipped
   recipe's step) on in-memory batches, then on batches streamed by `--workers` workers: images/s each, and
   their ratio (1.0 = the data path costs the training nothing).
Then: workers one GPU needs at `--gpu-rate` training images/s (default: the published MobileFaceNet rate,
1,961 images/s on one V100, fp32, batch 256; OneFlow DLPerf InsightFace report, MS1M "face_emore").
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from model.allocator import keep_freed_memory
from model.mobilefacenet import build_backbone
from training.config import AugmentConfig
from training.data import BatchSource, decode_faces, read_face, scan_identities
from training.distributed import DistContext
from training.partial_fc import ShardedMarginHead
from training.streaming import StreamingBatches, StreamingBatchSource

PUBLISHED_MOBILEFACENET_GPU_RATE = 1961.0  # images/s, 1 x V100 fp32, batch 256 (DLPerf, face_emore)


def load_refs(path: Path) -> tuple[list, np.ndarray]:
    """Face refs and labels of a .rec or an aligned folder-per-identity set."""
    identities = scan_identities(path)
    refs = [ref for identity in identities for ref in identity.files]
    labels = np.concatenate([np.full(len(i.files), k, np.int64) for k, i in enumerate(identities)])
    return refs, labels


def per_worker_rate(dataset: StreamingBatches, items: int) -> tuple[float, float, float]:
    """One single-threaded worker's images/s, run in this process: (decode + augment per wall second,
    decode + augment per CPU second (what a dedicated core gives, whatever the load), decode alone)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    dataset[(0, 0)]  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(items):
        dataset[(0, step % dataset.steps)]
    full = items * dataset.batch_size / (time.perf_counter() - start)
    full_cpu = items * dataset.batch_size / (time.process_time() - cpu_start)
    refs = [dataset.refs[i] for i in range(min(len(dataset.refs), items * dataset.batch_size))]
    start = time.perf_counter()
    for ref in refs:
        read_face(ref)
    decode = len(refs) / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    cv2.setNumThreads(-1)
    return full, full_cpu, decode


def loader_rate(dataset: StreamingBatches, workers: int, items: int) -> float:
    """Images/s the DataLoader with `workers` processes supplies to a consumer that does nothing."""
    source = StreamingBatchSource(dataset, workers)
    source.batch(0, 0)  # workers started, first batch in
    start = time.perf_counter()
    for step in range(1, items + 1):
        source.batch(step // dataset.steps, step % dataset.steps)
    return items * dataset.batch_size / (time.perf_counter() - start)


def training_rate(
    source: BatchSource | StreamingBatchSource, steps: int, classes: int
) -> tuple[float, float]:
    """Training (images per wall second, images per CPU second of this process) of the shipped recipe's
    step fed by `source`, after 2 warm-up steps. Workers' CPU time is not counted: they run elsewhere."""
    torch.manual_seed(0)
    net = build_backbone(drconv=True, region_num=8).to(memory_format=torch.channels_last).train()
    head = ShardedMarginHead(net.config.embedding_dim, classes, DistContext(), scale=32.0)
    optimizer = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    position = 0

    def step() -> int:
        nonlocal position
        images, labels, _ = source.batch(position // source.steps, position % source.steps)
        position += 1
        optimizer.zero_grad(set_to_none=True)
        loss, _ = head(net(images.contiguous(memory_format=torch.channels_last)), labels)
        loss.backward()
        optimizer.step()
        return len(labels)

    for _ in range(2):
        step()
    start, cpu_start = time.perf_counter(), time.process_time()
    images = sum(step() for _ in range(steps))
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help=".rec file or aligned folder per identity")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per data path")
    parser.add_argument("--items", type=int, default=8, help="batches timed for the data-path rates")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    parser.add_argument("--gpu-rate", type=float, default=PUBLISHED_MOBILEFACENET_GPU_RATE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    refs, labels = load_refs(args.data)
    augment = AugmentConfig()
    dataset = StreamingBatches(refs, labels, args.batch_size, 0, augment)
    print(f"{args.data}: {len(refs)} faces, batch {args.batch_size}, training threads {args.threads}")

    per_worker, per_worker_cpu, decode_only = per_worker_rate(dataset, args.items)
    print(
        f"1. one worker (decode + augment): {per_worker:.1f} img/s, {per_worker_cpu:.1f} img/CPU-s "
        f"(decode alone {decode_only:.1f} img/s)"
    )
    supplied = loader_rate(dataset, args.workers, args.items)
    print(f"2. DataLoader, {args.workers} workers, idle consumer: {supplied:.1f} img/s")

    memory = BatchSource(decode_faces(refs), labels, args.batch_size, 0, augment)
    classes = int(labels.max()) + 1
    in_memory, in_memory_cpu = training_rate(memory, args.steps, classes)
    streamed, streamed_cpu = training_rate(StreamingBatchSource(dataset, args.workers), args.steps, classes)
    print(f"3. training, in-memory batches: {in_memory:.1f} img/s, {in_memory_cpu:.1f} img/CPU-s")
    headroom = per_worker_cpu * args.workers / in_memory_cpu
    print(
        f"   training, {args.workers} streaming workers: {streamed:.1f} img/s, {streamed_cpu:.1f} img/CPU-s "
        f"(wall ratio {streamed / in_memory:.2f}; {args.workers} worker cores would supply {headroom:.0f}x "
        "what a training core uses)"
    )
    needed = args.gpu_rate / per_worker_cpu
    print(
        f"a GPU training at {args.gpu_rate:.0f} img/s needs {needed:.1f} worker cores of this CPU "
        f"({per_worker_cpu:.0f} img/CPU-s each): data.workers >= {math.ceil(needed)} per GPU"
    )


if __name__ == "__main__":
    main()
