"""LoRA on the adaptor (peft): identity at init, what trains, merge equals the unmerged forward, save/load."""

import pytest
import torch

from schemas.errors import ConfigError
from supir.lora import LoraSettings, add_lora, has_lora, load_lora_state_dict, lora_state_dict, merge_lora
from supir.model import SupirUNet
from supir.tiny_sdxl import build_tiny_sdxl_pipeline


@pytest.fixture(scope="module")
def unet():
    return build_tiny_sdxl_pipeline(seed=0).unet


def _inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.tensor([10, 700][:batch])
    ehs = torch.randn(batch, 77, 64, generator=g)
    added = {
        "text_embeds": torch.randn(batch, 32, generator=g),
        "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * batch),
    }
    return x, t, ehs, added, torch.randn(batch, 4, 8, 8, generator=g)


def _model(unet, seed=1):
    torch.manual_seed(seed)
    model = SupirUNet.from_unet(unet, (1, 1))
    # Non-zero hint conv and connectors, so the adaptor's features actually reach the output.
    with torch.no_grad():
        for p in list(model.adaptor.hint_conv.parameters()) + list(model.connectors.parameters()):
            p.normal_(0, 0.02)
    return model


def _perturb_lora(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.adaptor.core.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_lora_at_init_leaves_the_output_unchanged(unet):
    model = _model(unet)
    inputs = _inputs()
    with torch.no_grad():
        before = model(*inputs)
    add_lora(model.adaptor, LoraSettings(rank=4))
    assert has_lora(model.adaptor)
    with torch.no_grad():
        after = model(*inputs)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_only_lora_hint_and_connector_parameters_get_gradients(unet):
    model = _model(unet)
    lora_params = add_lora(model.adaptor, LoraSettings(rank=4, targets=["attention", "feed_forward", "conv"]))
    trainable = {id(p) for p in lora_params} | {id(p) for p in model.connectors.parameters()}
    model(*_inputs()).square().mean().backward()
    got_grad = {id(p) for p in model.parameters() if p.grad is not None}
    assert got_grad <= trainable
    names = {n for n, p in model.adaptor.core.named_parameters() if p.grad is not None}
    assert names and all("lora_" in n for n in names)
    # LoRA sits on attention, feed-forward and conv layers alike.
    assert any(".attn1.to_q." in n for n in names)
    assert any(".ff.net.2." in n for n in names)
    assert any(".conv1." in n for n in names)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.connectors.parameters())


def test_merged_and_unmerged_forwards_agree(unet):
    model = _model(unet)
    add_lora(model.adaptor, LoraSettings(rank=4, alpha=8))
    _perturb_lora(model)
    inputs = _inputs(seed=3)
    with torch.no_grad():
        unmerged = model(*inputs)
        base = SupirUNet(unet, _model(unet).adaptor, model.connectors)(*inputs)
    assert (unmerged - base).abs().max() > 1e-4  # the perturbed LoRA changes the output
    assert merge_lora(model.adaptor) > 0
    assert not has_lora(model.adaptor)
    assert not any("lora_" in k for k in model.adaptor.state_dict())
    with torch.no_grad():
        merged = model(*inputs)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


def test_lora_weights_save_and_load_alone(unet):
    model = _model(unet)
    add_lora(model.adaptor, LoraSettings(rank=4))
    _perturb_lora(model)
    state = lora_state_dict(model.adaptor)
    assert state and all("lora_" in k for k in state)
    size = sum(v.numel() for v in state.values())
    assert size < sum(p.numel() for p in model.adaptor.core.parameters()) / 5  # LoRA only, not the adaptor
    fresh = _model(unet)
    add_lora(fresh.adaptor, LoraSettings(rank=4))
    load_lora_state_dict(fresh.adaptor, state)
    inputs = _inputs(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*inputs), model(*inputs), rtol=0, atol=0)


def test_bad_lora_settings_are_clear_errors(unet):
    model = _model(unet)
    with pytest.raises(ConfigError, match="lora.targets"):
        add_lora(model.adaptor, LoraSettings(rank=4, targets=["attn"]))
    with pytest.raises(ConfigError, match="lora.rank"):
        add_lora(model.adaptor, LoraSettings(rank=0))
