"""Training throughput (images/s): plain MobileFaceNet vs DRConv-MobileFaceNet, the step `drface train` runs.

    python benchmarks/bench_train.py --batch-size 64 --steps 5 --threads 2

Like `drface train`, the process first switches glibc malloc to keep freed memory (model/allocator.py);
--default-malloc measures without that (the difference is mostly kernel time spent on page faults).
One training step = augmentation-free forward + ArcFace head (300 classes) + backward + SGD step, fp32 on CPU
(bf16 autocast on CUDA with --device cuda). Prints images/s per backbone and the ratio to the plain one,
in both memory layouts, all measured in the same process (ratios against the plain contiguous run).
Images per CPU-second (process time, all threads) is reported next to wall-clock images/s because on a shared
machine the wall clock mostly measures the neighbours; on an idle machine wall ~= CPU rate x cores used.
"""

from __future__ import annotations

import argparse
import time

import torch

from model.allocator import keep_freed_memory
from model.mobilefacenet import build_backbone
from training.distributed import DistContext
from training.partial_fc import ShardedMarginHead


def images_per_second(
    drconv: bool, region_num: int, batch_size: int, steps: int, device: torch.device, channels_last: bool
) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process, all threads)."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = build_backbone(drconv=drconv, region_num=region_num).to(device, memory_format=memory_format).train()
    head = ShardedMarginHead(net.config.embedding_dim, 300, DistContext(device=device), scale=32.0).to(device)
    optimizer = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, 112, 112, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 300, (batch_size,), device=device)
    amp = device.type == "cuda"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = net(images)
        loss, _ = head(embeddings.float(), labels)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: allocator, kernels
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    images = steps * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc malloc as is (drface train switches it)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        keep_freed_memory()
    device = torch.device(args.device)
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{args.steps} timed steps"
    )
    # The first model built in a process pays one-off kernel set-up (measured: 4x slower); discard it.
    images_per_second(False, 8, args.batch_size, 1, device, False)
    print("backbone                  layout         img/s (wall)  img/CPU-s  ratio (CPU time)")
    baseline = None
    for channels_last in (False, True):
        layout = "channels_last" if channels_last else "contiguous   "
        for drconv, region_num in ((False, 8), (True, 4), (True, 8)):
            wall, cpu = images_per_second(
                drconv, region_num, args.batch_size, args.steps, device, channels_last
            )
            baseline = baseline or cpu
            name = f"DRConv-MobileFaceNet m={region_num}" if drconv else "plain MobileFaceNet     "
            print(f"{name}  {layout}  {wall:12.1f}  {cpu:9.1f}  {cpu / baseline:.2f}x", flush=True)


if __name__ == "__main__":
    main()
