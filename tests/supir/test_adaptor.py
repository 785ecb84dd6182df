"""Adaptor + connectors around the frozen UNet: sizes, zero-init identity, gradients, save/load."""

import pytest
import torch

from supir.adaptor import SupirAdaptor
from supir.model import SupirUNet, parameter_counts
from supir.tiny_sdxl import build_tiny_sdxl_pipeline


@pytest.fixture(scope="module")
def unet():
    return build_tiny_sdxl_pipeline(seed=0).unet


def _inputs(hw=(4, 4), seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, *hw, generator=g)
    t = torch.tensor([10, 700][:batch])
    ehs = torch.randn(batch, 77, 64, generator=g)
    added = {
        "text_embeds": torch.randn(batch, 32, generator=g),
        "time_ids": torch.tensor([[64.0, 96.0, 0.0, 32.0, 32.0, 32.0]] * batch),
    }
    return x, t, ehs, added, torch.randn(batch, 4, *hw, generator=g)


def test_sdxl_sizes_match_the_reference_code():
    counts = parameter_counts()  # real SDXL config, meta device: no weights, no memory
    assert counts["unet"] == 2_567_463_684
    assert counts["adaptor"] == 597_763_520  # trimmed [1, 1, 4] copy + 4→320 hint conv
    assert counts["adaptor_hint_conv"] == 11_840
    assert counts["connectors"] == 54_797_440  # 10 ZeroSFT + 2 ZeroCrossAttn
    assert parameter_counts(transformer_layers_per_block=(1, 2, 10))["adaptor"] == 1_243_378_880


def test_adaptor_is_a_trimmed_copy_of_the_encoder(unet):
    adaptor = SupirAdaptor.from_unet(unet, (1, 1))
    source = unet.state_dict()
    own = adaptor.core.state_dict()
    assert all(torch.equal(own[k], source[k]) for k in own)
    assert "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight" in source
    assert not any("transformer_blocks.1." in k for k in own)  # depth 2 trimmed to 1
    assert not any(k.startswith(("up_blocks", "conv_out")) for k in own)
    assert all((p == 0).all() for p in adaptor.hint_conv.parameters())


@pytest.mark.parametrize("hw", [(4, 4), (5, 3)])
def test_residual_model_equals_frozen_unet_at_init(unet, hw):
    # Only the identity-at-init option reproduces SDXL; the released form (default) does not.
    model = SupirUNet.from_unet(unet, (1, 1), residual=True)
    x, t, ehs, added, lq = _inputs(hw)
    with torch.no_grad():
        reference = unet(x, t, encoder_hidden_states=ehs, added_cond_kwargs=added).sample
        out = model(x, t, ehs, added, lq)
    assert torch.equal(out, reference)
    with torch.no_grad():
        released = SupirUNet.from_unet(unet, (1, 1))(x, t, ehs, added, lq)
    assert not torch.allclose(released, reference, atol=1e-4)


def test_only_adaptor_connector_and_hint_parameters_learn(unet):
    model = SupirUNet.from_unet(unet, (1, 1))
    frozen = {k: v.clone() for k, v in model.unet.state_dict().items()}
    trainable = {id(p) for p in model.trainable_parameters()}
    assert all(not p.requires_grad for p in model.unet.parameters())
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for step in range(2):  # the second step reaches the parameters behind the zero layers
        opt.zero_grad()
        x, t, ehs, added, lq = _inputs(seed=step)
        model(x, t, ehs, added, lq).square().mean().backward()
        opt.step()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(id(dict(model.named_parameters())[n]) in trainable for n in grads)
    assert all(p.grad is None for p in model.unet.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in model.unet.state_dict().items())
    assert model.adaptor.hint_conv.weight.grad.abs().sum() > 0
    assert model.adaptor.core.down_blocks[0].resnets[0].conv1.weight.grad.abs().sum() > 0
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("connectors.cross_attn"))


def test_trainable_parts_round_trip(unet, tmp_path):
    model = SupirUNet.from_unet(unet, (1, 1))
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_trainable(tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "adaptor.safetensors",
        "adaptor_config.json",
        "connectors.safetensors",
        "connectors_config.json",
    ]
    loaded = SupirUNet.from_pretrained(unet, tmp_path)
    x, t, ehs, added, lq = _inputs()
    with torch.no_grad():
        expected = model(x, t, ehs, added, lq, control_scale=0.7)
        assert torch.equal(loaded(x, t, ehs, added, lq, control_scale=0.7), expected)
        assert not torch.equal(
            expected, unet(x, t, encoder_hidden_states=ehs, added_cond_kwargs=added).sample
        )
