"""Tests for optforge.rl.trl_adapter: TRL's GRPOTrainer with our advantages and SNR lr."""

from __future__ import annotations

import pytest
import torch

from optforge.rl import advantages


@pytest.mark.slow
def test_trl_grpo_adapter_trains_with_optimal_baseline_and_snr(tmp_path):
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    import transformers
    from trl import GRPOConfig

    from optforge.rl import make_oblr_grpo_trainer_class

    vocab = {str(i): i for i in range(10)} | {"<pad>": 10, "<eos>": 11, "<unk>": 12}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    cfg = transformers.LlamaConfig(
        vocab_size=13, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=10, eos_token_id=11,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg)
    ds = datasets.Dataset.from_dict({"prompt": ["1 2 3 4", "5 6 7 8", "0 0 1 2", "9 9 3 3"] * 2})
    seen = []

    def reward(completions, **kw):
        return [float(len(c.split()) % 2) for c in completions]

    cls = make_oblr_grpo_trainer_class()

    class Recording(cls):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            seen.append((out, self._oblr_rewards_per_func[:, 0].clone()))
            return out

    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
        max_completion_length=4, max_steps=3, report_to=[], use_cpu=True, learning_rate=1e-3,
        save_strategy="no", logging_steps=1, seed=0,
    )  # fmt: skip
    trainer = Recording(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
        baseline="optimal", norm_method="length", snr_lr=True,
    )  # fmt: skip
    trainer.train()
    assert seen
    for out, rewards in seen:  # the advantages are ours: length-weighted LOO, group-std scaled
        w = out["completion_mask"].sum(1).float()
        expected = advantages(rewards, 4, weights=w, scale_rewards="group")
        assert torch.allclose(out["advantages"].float(), expected, atol=1e-5)
    ctl = trainer.snr_callback.controller
    assert ctl is not None and 0.05 <= ctl.last_rho <= 1.0
    with pytest.raises(ValueError, match="norm_method"):
        cls(model=model, reward_funcs=reward, args=args, train_dataset=ds, norm_method="ghost")
