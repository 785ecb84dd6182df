"""Import pyiqa without letting it patch transformers' Llama classes for the whole process.

pyiqa's Q-Align architecture (`pyiqa.archs.q_align.modeling_llama2.replace_llama_modality_adaptive`),
run when pyiqa is imported, replaces transformers' Llama attention and decoder classes and the
``forward`` of ``LlamaModel`` and ``LlamaForCausalLM`` process-wide. Its versions read configs and
arguments that transformers 5 no longer has, so any Llama (LLaVA) used later in the same process fails
(``'rope_theta'``, ``model_forward() got an unexpected keyword argument 'cache'``). Every import of
pyiqa in the project goes through here (training's LPIPS, ingest's metrics), and the originals are
put back after pyiqa has patched them.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

# module -> attributes pyiqa replaces; "Class.attr" names a class attribute (a method)
_LLAMA_PATCHED = {
    "transformers.models.llama.configuration_llama": ("LlamaConfig",),
    "transformers.models.llama.modeling_llama": (
        "LlamaAttention", "LlamaFlashAttention2", "LlamaSdpaAttention", "LlamaDecoderLayer",
        "LlamaModel.forward", "LlamaForCausalLM.forward",
    ),
}
_MISSING = object()


def _owner(module, dotted: str):
    *path, name = dotted.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    return owner, name


@contextmanager
def transformers_llama_guard():
    """Put back whatever of ``_LLAMA_PATCHED`` the body replaced."""
    saved = {}
    for module_name, names in _LLAMA_PATCHED.items():
        module = importlib.import_module(module_name)
        for dotted in names:
            owner, name = _owner(module, dotted)
            saved[(owner, name)] = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(
                owner, name, _MISSING
            )
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            if value is _MISSING:
                if name in vars(owner):
                    delattr(owner, name)
            else:
                setattr(owner, name, value)


def import_pyiqa():
    """``import pyiqa`` (and its patching Q-Align module) under the guard; returns the module."""
    with transformers_llama_guard():
        import pyiqa

        try:  # the patch runs once, when this module is first imported: do it here, under the guard
            import pyiqa.archs.q_align.modeling_llama2  # noqa: F401
        except Exception:  # Q-Align needs extras we don't use; nothing to undo then
            pass
    return pyiqa


def create_metric(metric: str, **options):
    """``pyiqa.create_metric`` (it imports architectures lazily) under the same guard."""
    pyiqa = import_pyiqa()
    with transformers_llama_guard():
        return pyiqa.create_metric(metric, **options)
