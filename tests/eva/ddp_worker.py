"""Run under ``torchrun --nproc_per_node 2``: EVA pretraining with train_loop on gloo; each rank saves its
final weights and loss history to OUT/rank{r}.pt (tests/eva/test_distributed.py compares them)."""

import sys

import torch
import torch.distributed as dist
from torch import nn

from reprozoo.eva import EVAPretrainer, create_eva, train_loop


class PoolTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 4, stride=4)

    def forward(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)


def main(out: str) -> None:
    dist.init_process_group("gloo")
    r = dist.get_rank()
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    student = create_eva(dict(img_size=16, patch_size=4, embed_dim=8, depth=2, num_heads=2), mask_token=True,
                         global_pool="token", num_classes=0)
    eva = EVAPretrainer(student, PoolTeacher(), mask_ratio=0.4, min_block=2, seed=r)
    hist = train_loop(eva, (x,), lambda m, xb: m(xb), epochs=2, batch_size=8, lr=1e-3, seed=0, params=eva,
                      checkpoint=f"{out}/ckpt.pt")
    torch.save({"state": eva.state_dict(), "history": hist, "world": dist.get_world_size()}, f"{out}/rank{r}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
