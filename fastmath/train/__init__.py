"""Training stages over TRL's trainers: sft, pairs (mined for DPO), dpo, grpo, and what they share (trainer)."""
