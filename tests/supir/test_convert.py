"""Release checkpoints: import matches the official code (fixtures), export reproduces its layout, round trips."""

import hashlib
import json
import lzma
import os
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from schemas.errors import CheckpointError
from supir import convert
from supir.convert import export_release, import_release, layout_entries, read_state_dict
from supir.model import SDXL_UNET_CONFIG, SupirUNet
from supir.tiny_sdxl import build_tiny_sdxl, build_tiny_sdxl_pipeline

FIXTURES = Path(__file__).parents[1] / "fixtures" / "supir_official"


def _unpacked(packed: Path) -> Path:
    """The fixture's .xz (1.7 MB instead of 6.5 MB) unpacked once into the temp dir, keyed by its hash."""
    data = packed.read_bytes()
    out = Path(tempfile.gettempdir()) / f"supir-fixture-{hashlib.sha256(data).hexdigest()[:16]}" / packed.stem
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(lzma.decompress(data))
        tmp.replace(out)  # atomic: a concurrent reader sees the whole file or none
    return out


RELEASE = _unpacked(FIXTURES / "release_tiny.safetensors.xz")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sdxl_pipeline(seed=0)


@pytest.fixture(scope="module")
def io():
    return load_file(FIXTURES / "official_io.safetensors")


@pytest.fixture(scope="module")
def imported(tiny):
    return import_release(RELEASE, tiny.unet, tiny.vae)


def _forward(model, io, scale):
    added = {"text_embeds": io["pooled"], "time_ids": io["time_ids"]}
    with torch.no_grad():
        return model(io["x"], io["t"], io["context"], added, io["lq_latent"], control_scale=scale)


def _state(model, robust=None):
    state = {f"adaptor.{k}": v for k, v in model.adaptor.state_dict().items()}
    state |= {f"connectors.{k}": v for k, v in model.connectors.state_dict().items()}
    return state | ({f"robust_encoder.{k}": v for k, v in robust.state_dict().items()} if robust else {})


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_fixtures_were_made_with_this_frozen_unet(tiny):
    meta = json.loads((FIXTURES / "meta.json").read_text())
    state = tiny.unet.state_dict()
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    assert digest == meta["frozen_unet_sha256"], "tiny SDXL changed: regenerate the fixtures (README.md)"


def test_import_builds_the_released_configuration(imported):
    assert imported.depth == [1, 2]  # the tiny UNet's own depth, as the release's [1, 2, 10]
    assert imported.counts == {"adaptor": 214, "connectors": 79, "robust_encoder": 72, "sdxl_skipped": 0}
    assert not imported.model.connectors.config.residual
    assert list(imported.model.connectors.cross_attn) == ["0"]


def test_import_matches_the_official_forward(imported, io):
    added = {"text_embeds": io["pooled"], "time_ids": io["time_ids"]}
    with torch.no_grad():
        features = imported.model.adaptor(io["x"], io["t"], io["context"], added, io["lq_latent"])
    assert len(features) == 7
    for i, f in enumerate(features):
        torch.testing.assert_close(f, io[f"control.{i}"], rtol=0, atol=1e-5)
    for scale in (1.0, 0.7):
        out = _forward(imported.model, io, scale)
        diff = (out - io[f"out_scale_{scale}"]).abs().max().item()
        print(f"control scale {scale}: max |ours - official| = {diff:.3g}")
        assert diff <= 1e-5
    # The test can fail: one connector's weights moved changes the output.
    bias = imported.model.connectors.skip[3].zero_add.bias
    kept = bias.detach().clone()
    with torch.no_grad():
        bias.add_(0.1)
        moved = _forward(imported.model, io, 1.0)
        bias.copy_(kept)
    assert (moved - io["out_scale_1.0"]).abs().max() > 1e-3


def test_robust_encoder_matches_the_official_denoise_encoder(imported, io, tiny):
    encoded = imported.robust_encoder.encode(io["image"]).latent_dist
    moments = torch.cat([encoded.mean, encoded.logvar], 1)
    diff = (moments - io["encoder_moments"]).abs().max().item()
    print(f"robust encoder: max |ours - official| = {diff:.3g}")
    assert diff <= 1e-4
    assert imported.robust_encoder.quant_conv is tiny.vae.quant_conv  # shared, as released
    assert not any(k.startswith("quant_conv") for k in imported.robust_encoder.state_dict())


def test_export_reproduces_the_fixture(imported):
    state, notes = export_release(imported.model, imported.robust_encoder, dtype=torch.float16)
    assert notes == []
    _assert_same(state, load_file(RELEASE))


def test_export_then_import_is_bit_exact(tiny, tmp_path):
    fresh = import_release(RELEASE, tiny.unet, tiny.vae)
    with torch.no_grad():  # float32 values that float16 cannot hold
        for p in [*fresh.model.trainable_parameters(), *fresh.robust_encoder.parameters()]:
            p.add_(1e-4 * torch.randn_like(p))
    state, _ = export_release(fresh.model, fresh.robust_encoder)
    for name in ("x.safetensors", "x.ckpt"):
        convert.save_release(tmp_path / name, state, [], [1, 2])
        back = import_release(tmp_path / name, tiny.unet, tiny.vae, depth=[1, 2])
        _assert_same(_state(back.model, back.robust_encoder), _state(fresh.model, fresh.robust_encoder))


def test_trimmed_model_exports_with_a_depth_note(tiny, tmp_path):
    trimmed = SupirUNet.from_unet(tiny.unet, (1, 1))
    state, notes = export_release(trimmed, tiny.vae)
    assert len(notes) == 1 and "transformer_depth: [1, 1]" in notes[0]
    path = convert.save_release(tmp_path / "t.safetensors", state, notes, [1, 1])
    assert json.loads(path.with_name("t.safetensors.json").read_text())["transformer_depth"] == [1, 1]
    with pytest.raises(CheckpointError, match=r"depth \[1, 1\].*asks for \[1, 2\].*adaptor_depth=\[1, 1\]"):
        import_release(path, tiny.unet, tiny.vae, depth=[1, 2])
    back = import_release(path, tiny.unet, tiny.vae)
    assert back.depth == [1, 1]
    _assert_same(_state(back.model), _state(trimmed))


def test_residual_connectors_cannot_be_exported(tiny):
    with pytest.raises(CheckpointError, match="residual"):
        export_release(SupirUNet.from_unet(tiny.unet, (1, 2), residual=True), tiny.vae)


def _broken(tmp_path, edit) -> Path:
    state = load_file(RELEASE)
    edit(state)
    save_file(state, tmp_path / "broken.safetensors")
    return tmp_path / "broken.safetensors"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.pop("model.control_model.time_embed.0.weight"),
            r"1 missing: model.control_model.time_embed.0",
        ),
        (
            lambda s: s.update({"model.diffusion_model.project_modules.3.norm1.weight": torch.ones(7)}),
            r"1 misshapen: model.diffusion_model.project_modules.3.norm1.weight: file \(7,\), model \(64,\)",
        ),
        (lambda s: s.update({"model.control_model.extra.weight": torch.ones(1)}), r"1 unknown: .*extra"),
        (lambda s: s.update({"ema.decay": torch.ones(1)}), r"1 unknown: ema.decay"),
    ],
)
def test_layout_errors_name_the_keys(tiny, tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        import_release(_broken(tmp_path, edit), tiny.unet, tiny.vae)


def test_sdxl_tensors_in_a_merged_file_are_skipped(tiny, tmp_path):
    path = _broken(tmp_path, lambda s: s.update({"model.diffusion_model.out.0.weight": torch.ones(2)}))
    assert import_release(path, tiny.unet, tiny.vae).counts["sdxl_skipped"] == 1


class _Payload:  # a pickled object: loading it would need this code
    pass


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": _Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="needs pickle code"):
        read_state_dict(tmp_path / "evil.ckpt")
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "plain.ckpt")
    assert list(read_state_dict(tmp_path / "plain.ckpt")) == ["w"]


def test_release_sized_layout_has_the_released_tensor_counts():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from supir.adaptor import AdaptorConfig, SupirAdaptor
    from supir.model import ConnectorsConfig, SupirConnectors, parameter_counts

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
        vae = AutoencoderKL(
            block_out_channels=[128, 256, 512, 512],
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=2,
        )
        connectors = SupirConnectors(ConnectorsConfig.from_unet(unet))
    adaptor = SupirAdaptor(AdaptorConfig(dict(SDXL_UNET_CONFIG), [1, 2, 10]), device="meta")
    entries = layout_entries(adaptor, connectors, [f"encoder.{k}" for k in vae.encoder.state_dict()])
    groups = [e.ours.split(".")[0] for e in entries]
    assert [groups.count(g) for g in ("adaptor", "connectors", "robust_encoder")] == [810, 118, 106]
    releases = {e.release for e in entries}
    assert "model.diffusion_model.project_modules.7.attn.to_q.weight" in releases  # cross-attention at 3, 7
    assert "model.diffusion_model.project_modules.3.norm2.weight" in releases
    assert "model.diffusion_model.project_modules.11.param_free_norm.weight" in releases  # middle last
    assert parameter_counts(transformer_layers_per_block=(1, 2, 10))["adaptor"] == 1_243_378_880


def test_finetune_from_a_release_then_export_and_import(tiny, tmp_path):
    from supir.train import train
    from supir.train_config import load_config
    from tests.supir.train_helpers import synthetic_batches

    sdxl = build_tiny_sdxl(tmp_path / "sdxl", seed=0)
    ours = tmp_path / "imported"
    assert convert.main(["import", str(RELEASE), "--pretrained", str(sdxl), "--out", str(ours)]) == 0
    config = load_config(
        Path(__file__).parents[2] / "supir" / "configs" / "finetune-v0q.yaml",
        [f"model.pretrained={sdxl}", "model.adaptor_depth=[1, 2]", f"init_from={ours}", "model.frozen_dtype=float32",
         "model.gradient_checkpointing=false", "mixed_precision='no'", f"output_dir={tmp_path / 'run'}",
         "device=cpu", "steps=2", "optim.lr=1e-3", "optim.warmup_steps=0", "optim.grad_accum=1", "val.every=0"],
    )  # fmt: skip
    result = train(config, batches=synthetic_batches(2, batch_size=1, size=32), echo=lambda _: None)
    checkpoint = result["checkpoint"]
    assert (checkpoint / "robust_encoder.safetensors").exists()  # E_dr from the release goes with it
    trained = _state(result["model"], result["hint_encoder"])
    start = import_release(RELEASE, tiny.unet, tiny.vae)
    assert not torch.equal(
        trained["adaptor.core.conv_in.weight"], _state(start.model)["adaptor.core.conv_in.weight"]
    )
    out = tmp_path / "finetuned.safetensors"
    assert convert.main(["export", str(checkpoint), "--pretrained", str(sdxl), "--out", str(out)]) == 0
    back = import_release(out, tiny.unet, tiny.vae, depth=[1, 2])
    _assert_same(_state(back.model, back.robust_encoder), trained)


def test_init_from_a_release_file_loads_it_into_the_configured_model(tiny, imported):
    from supir.checkpoint import load_init

    model = SupirUNet.from_unet(tiny.unet, (1, 2))
    robust = load_init(RELEASE, model, tiny.vae, depth=[1, 2])
    _assert_same(_state(model, robust), _state(imported.model, imported.robust_encoder))
    with pytest.raises(CheckpointError, match="adaptor_depth"):
        load_init(RELEASE, SupirUNet.from_unet(tiny.unet, (1, 1)), tiny.vae, depth=[1, 1])
