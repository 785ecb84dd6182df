"""Helpers for the trainer tests: in-memory batches in the reader's format and a tiny config."""

import torch

from supir.prompts import NEGATIVE_PROMPT_PAPER, training_prompt
from supir.train_config import load_config

CAPTIONS = ["a red house by a river", "a close up of a cat face", "a stone wall with moss", ""]


def synthetic_batches(
    n: int, batch_size: int = 2, size: int = 32, seed: int = 0, offset: int = 0
) -> list[dict]:
    """`n` batches shaped like supir.reader's: smooth random GT, a blurred+noisy LQ, prompts."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(n):
        coarse = torch.rand(batch_size, 3, size // 8, size // 8, generator=g) * 2 - 1
        gt = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        gt = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(-1, 1)
        lq = torch.nn.functional.avg_pool2d(gt, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
        lq = (lq + 0.05 * torch.randn(lq.shape, generator=g)).clamp(-1, 1)
        negative = torch.tensor([(i + j) % 4 == 3 for j in range(batch_size)])
        txt = [
            NEGATIVE_PROMPT_PAPER if neg else training_prompt(CAPTIONS[(i + j) % 3], False)
            for j, neg in enumerate(negative.tolist())
        ]
        batches.append(
            {
                "gt": gt,
                "lq": lq,
                "txt": txt,
                "is_negative": negative,
                "original_size": torch.tensor([[size * 2, size * 3]] * batch_size),
                "crop_top_left": torch.tensor([[0, size]] * batch_size),
                "__key__": [f"s{offset + i:04d}_{j}" for j in range(batch_size)],
            }
        )
    return batches


def tiny_config(output_dir, sdxl_dir, *overrides):
    return load_config(
        None,
        [
            f"model.pretrained={sdxl_dir}",
            "model.adaptor_depth=[1, 1]",
            f"output_dir={output_dir}",
            "device=cpu",
            "optim.lr=1e-3",
            "steps=4",
            "checkpoint_every=0",
            "log_every=1",
            *overrides,
        ],
    )


class RecordingBatches:
    """An iterable of batches that records the sample keys it handed out."""

    def __init__(self, batches):
        self.batches, self.keys = batches, []

    def __iter__(self):
        for batch in self.batches:
            self.keys.extend(batch["__key__"])
            yield batch


def ddp_worker(rank: int, world: int, port: int, sdxl_dir: str, out_dir: str) -> None:
    """One rank of the 2-process gloo test (module-level so torch.multiprocessing can spawn it)."""
    import json
    import os

    from safetensors.torch import save_file

    from supir.train import train

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    # Each rank gets its own samples, as the reader's rank split gives them.
    data = RecordingBatches(synthetic_batches(2, batch_size=1, size=32, seed=rank, offset=100 * rank))
    result = train(tiny_config(f"{out_dir}/run", sdxl_dir, "steps=2", "checkpoint_every=0"), batches=data)
    model = result["model"]
    state = {f"adaptor.{k}": v for k, v in model.adaptor.state_dict().items()}
    state.update({f"connectors.{k}": v for k, v in model.connectors.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()}, f"{out_dir}/rank{rank}.safetensors")
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"keys": data.keys, "losses": result["losses"]}, f)
    torch.distributed.destroy_process_group()
