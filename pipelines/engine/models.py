"""The one policy of model stages: which device, which dtype, and what a user reads when weights are missing.

``--dtype auto`` means the same in every stage: bf16 on a GPU that supports it (the dtype LLaVA-1.5
and SDXL were released in and trained with, and without fp16's overflow in SDXL's VAE), else fp16 on
a GPU, fp32 on CPU (CPU half-precision kernels are slow or missing).
"""

from schemas.errors import MissingWeightsError

DTYPES = ("auto", "bf16", "fp16", "fp32")


def pick_device(torch_threads: int | None = None) -> str:
    """``cuda`` when this worker sees a GPU, else ``cpu``; pins the intra-op threads of a CPU worker."""
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str, device: str):
    """The torch dtype for ``--dtype NAME`` on ``device`` (see the module docstring for ``auto``)."""
    import torch

    fixed = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name in fixed:
        return fixed[name]
    if name != "auto":
        raise ValueError(f"unknown dtype {name!r}; one of {', '.join(DTYPES)}")
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def weights_error(what: str, model: str, exc: BaseException, layout: str = "save_pretrained") -> MissingWeightsError:
    """The message every model stage gives when ``from_pretrained`` cannot find a model offline."""
    return MissingWeightsError(
        f"cannot load {what} {model!r}: {exc}. Give --model a local folder ({layout} layout) "
        "or a hub id whose files are in the Hugging Face cache."
    )
