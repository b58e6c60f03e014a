"""Tests for optforge.rl.trl_adapter: TRL's GRPOTrainer with our advantages and SNR lr."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from optforge.rl import advantages

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")


def _tokenizer():
    """A word-level tokenizer built offline (no download)."""
    vocab = {str(i): i for i in range(10)} | {"<pad>": 10, "<eos>": 11, "<unk>": 12}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def _model(seed: int = 0):
    cfg = transformers.LlamaConfig(
        vocab_size=13, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=10, eos_token_id=11,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.LlamaForCausalLM(cfg)


def _dataset():
    return datasets.Dataset.from_dict({"prompt": ["1 2 3 4", "5 6 7 8", "0 0 1 2", "9 9 3 3"] * 2})


def _reward(completions, **kw):
    return [float(len(c.split()) % 2) for c in completions]


def _args(out, **kw):
    from trl import GRPOConfig

    base = dict(
        output_dir=str(out), per_device_train_batch_size=8, num_generations=4,
        max_completion_length=4, max_steps=3, report_to=[], use_cpu=True, learning_rate=1e-3,
        save_strategy="no", logging_steps=1, seed=0,
    )  # fmt: skip
    return GRPOConfig(**(base | kw))


@pytest.mark.slow
def test_trl_grpo_adapter_trains_with_optimal_baseline_and_snr(tmp_path):
    from optforge.rl import make_oblr_grpo_trainer_class

    seen = []
    cls = make_oblr_grpo_trainer_class()

    class Recording(cls):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            seen.append((out, self._oblr_rewards_per_func[:, 0].clone()))
            return out

    model, args, ds = _model(), _args(tmp_path), _dataset()
    trainer = Recording(
        model=model, reward_funcs=_reward, args=args, train_dataset=ds,
        processing_class=_tokenizer(), baseline="optimal", norm_method="length", snr_lr=True,
    )  # fmt: skip
    trainer.train()
    assert seen
    for out, rewards in seen:  # the advantages are ours: length-weighted LOO, group-std scaled
        w = out["completion_mask"].sum(1).float()
        expected = advantages(rewards, 4, weights=w, scale_rewards="group")
        assert torch.allclose(out["advantages"].float(), expected, atol=1e-5)
    ctl = trainer.snr_callback.controller
    assert ctl is not None and 0.05 <= ctl.last_rho <= 1.0
    # rho and the SNR are in the Trainer's logs, next to TRL's own metrics
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 3 and all("snr_lr/rho" in h and "snr_lr/lr" in h for h in logs)
    assert logs[0]["snr_lr/rho"] == 1.0  # no spread to measure yet
    assert logs[-1]["snr_lr/rho"] == ctl.last_rho
    snr = ctl.last_signal / ctl.last_noise
    assert logs[-1]["snr_lr/snr"] == pytest.approx(snr) and math.isfinite(snr)
    assert logs[-1]["snr_lr/lr"] == pytest.approx(ctl.last_rho * logs[-1]["learning_rate"])
    with pytest.raises(ValueError, match="norm_method"):
        cls(model=model, reward_funcs=_reward, args=args, train_dataset=ds, norm_method="ghost")
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        cls(model=model, reward_funcs=_reward, train_dataset=ds,
            args=_args(tmp_path, multi_objective_aggregation="normalize_then_sum"))  # fmt: skip
    with pytest.raises(ValueError, match="rho_min"):
        cls(model=model, reward_funcs=_reward, args=args, train_dataset=ds,
            snr_lr={"rho_min": 2.0})  # fmt: skip
    with pytest.raises(ValueError, match="lr_max"):
        cls(model=model, reward_funcs=_reward, args=args, train_dataset=ds,
            snr_lr={"lr_max": 1e-3})  # fmt: skip


@pytest.mark.slow
def test_trl_snr_lr_resume_equals_straight_run(tmp_path):
    """Resuming from a Trainer checkpoint restores the SNR controller: ρ and weights bit-equal."""
    from optforge.rl import make_oblr_grpo_trainer_class

    cls = make_oblr_grpo_trainer_class()
    # a warmup from lr 0 also checks that a zero scheduler lr does not trip the controller
    kw = dict(save_strategy="steps", save_steps=2, warmup_steps=1, lr_scheduler_type="linear")

    def run(out, resume=None):
        trainer = cls(
            model=_model(), reward_funcs=_reward, args=_args(out, **kw),
            train_dataset=_dataset(), processing_class=_tokenizer(), snr_lr=True,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(tmp_path / "a")
    assert (tmp_path / "a" / "checkpoint-2" / "oblr_snr_lr.pt").exists()
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-2"))
    c1, c2 = straight.snr_callback.controller, resumed.snr_callback.controller
    assert c1.num_updates == 2 and c2.num_updates == c1.num_updates
    assert c2.last_rho == c1.last_rho and c1.last_rho < 1.0
    assert repr(c2.state_dict()) == repr(c1.state_dict())
    params = zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True)
    for (name, p1), p2 in params:
        assert torch.equal(p1, p2), name
    step3 = [next(h for h in t.state.log_history if h.get("step") == 3 and "reward" in h)
             for t in (straight, resumed)]  # fmt: skip
    assert step3[0]["snr_lr/rho"] == step3[1]["snr_lr/rho"] == c1.last_rho
    # a checkpoint without the controller's state (saved without snr_lr) says so
    bare = tmp_path / "bare" / "checkpoint-2"
    shutil.copytree(tmp_path / "a" / "checkpoint-2", bare)
    (bare / "oblr_snr_lr.pt").unlink()
    with pytest.warns(UserWarning, match="no oblr_snr_lr.pt"):
        fresh = run(tmp_path / "c", resume=str(bare))
    assert fresh.snr_callback.controller.num_updates == 0
