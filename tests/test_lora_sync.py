"""Hook T's out-of-place LoRA merge (r1aqa_plugin/models/qwen2_audio/lora_sync.py) against peft's own merge.

Through verl's real FSDP engine (FSDP1 and FSDP2, one and two CPU ranks): tests/test_recipes.py,
test_weight_sync_sends_names_... and test_fsdp2_on_two_ranks_...
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from r1aqa_plugin.models.qwen2_audio import lora_sync

peft = pytest.importorskip("peft")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 5)
        self.out = nn.Linear(5, 3, bias=False)
        self.norm = nn.LayerNorm(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.out(self.proj(x)))


def _lora(**config) -> nn.Module:
    torch.manual_seed(0)
    model = peft.get_peft_model(Tiny(), peft.LoraConfig(r=2, lora_alpha=6, target_modules=["proj", "out"], **config))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.3)  # peft starts B at 0: nothing to merge
    return model


@pytest.mark.parametrize("config", [{}, {"use_rslora": True}])
def test_the_plan_merges_as_peft_merges(config):
    model = _lora(**config)
    state = model.state_dict()
    plan, why = lora_sync.merge_plan(model, set(state))
    assert why is None and sorted(plan) == ["base_model.model.out.base_layer.weight",
                                             "base_model.model.proj.base_layer.weight"]
    ours = {key: lora_sync.merged_weight(state[e.base], state[e.lora_a], state[e.lora_b], e) for key, e in plan.items()}
    assert all(not torch.equal(ours[key], state[key]) for key in ours)  # B A is not zero
    model.merge_adapter()
    for key, weight in ours.items():
        torch.testing.assert_close(weight, model.state_dict()[key], rtol=0, atol=1e-6)


def test_the_stream_sends_every_kept_key_once_and_leaves_the_weights_alone():
    model = _lora()
    state = model.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    plan, _ = lora_sync.merge_plan(model, set(state))
    names = {k: k.replace("base_model.model.", "").replace(".base_layer", "") for k in state if "lora_" not in k}
    sent = dict(lora_sync.stream(state, plan, names, lambda t: t))
    assert sorted(sent) == ["norm.bias", "norm.weight", "out.weight", "proj.bias", "proj.weight"]
    assert torch.equal(sent["proj.bias"], before["base_model.model.proj.base_layer.bias"])  # only weights get B A
    assert not torch.equal(sent["proj.weight"], before["base_model.model.proj.base_layer.weight"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_names_under_fsdp1_wrappers_are_the_state_dicts():
    assert lora_sync._state_dict_name("_fsdp_wrapped_module.base_model.model.layers.0._fsdp_wrapped_module."
                                      "_checkpoint_wrapped_module.mlp.up_proj") == "base_model.model.layers.0.mlp.up_proj"


@pytest.mark.parametrize(("config", "why"), [({"use_dora": True}, "DoRA"), ({"lora_bias": True}, "LoRA bias")])
def test_what_the_plan_cannot_express_goes_back_to_verls_merge(config, why):
    model = _lora(**config)
    plan, reason = lora_sync.merge_plan(model, set(model.state_dict()))
    assert plan == {} and why in reason and "proj" in reason


def test_an_already_merged_layer_or_a_missing_key_goes_back_to_verls_merge():
    model = _lora()
    keys = set(model.state_dict())
    _, reason = lora_sync.merge_plan(model, keys - {"base_model.model.out.lora_A.default.weight"})
    assert reason == "the state dict has no base_model.model.out.lora_A.default.weight"
    model.merge_adapter()
    _, reason = lora_sync.merge_plan(model, keys)
    assert reason == "base_model.model.proj is already merged"
