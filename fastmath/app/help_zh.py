"""Every recipe key's help in 中文, keyed by `section.key`: what the Train form's tooltips say when the
interface is in Chinese. The English help is the config dataclasses' own metadata (`config.key`), which
`--help` prints; this table follows it key by key (`test_every_recipe_key_has_its_chinese_help` keeps
the two in step). Key names, values and file names inside the text stay as they are."""

from __future__ import annotations

HELP_ZH: dict[str, str] = {
    # model
    "model.name": "hub 上的模型 id 或本地模型目录",
    "model.revision": "model.name 在 hub 上的版本（分支、标签或提交）",
    "model.backend": "auto：装有 Unsloth 时用 Unsloth（单进程；无 CUDA 时用其 CPU 后端），否则用 transformers + PEFT",
    "model.load_in_4bit": "QLoRA：基础权重以 4 位 NF4 加载（bitsandbytes：CUDA 和 CPU 均可）",
    "model.max_seq_length": "样本的最大 token 数；更长的样本会被丢弃，不会被截断",
    "model.dtype": "auto：CUDA 支持时用 bf16，否则用 fp32",
    "model.attn_implementation": "transformers 的注意力内核（sdpa、eager、flash_attention_2）",
    # lora
    "lora.r": "LoRA 的秩",
    "lora.alpha": "LoRA 缩放的分子（缩放 = alpha / r）",
    "lora.dropout": "LoRA 输入上的 dropout",
    "lora.target_modules": "加装适配器的线性层",
    # data
    "data.train": "任务名（取其训练集）、hub 数据集 id，"
    "或 .jsonl/.json/.csv/.parquet/.tsv 文件（自带 fastmath:samples/...）",
    "data.question_field": "数据文件中的题目字段（评测文件、SFT、偏好对、GRPO）",
    "data.answer_field": "答案字段：单独的标准答案，或以 '#### N' 结尾的完整解答",
    "data.subset": "hub 数据集的配置（GSM8K 为 main）",
    "data.split": "hub 数据集的划分",
    "data.limit": "只取前 N 条可用记录，用于快速试跑（null = 全部）",
    "data.keep_calculator": "在训练目标中保留 GSM8K 的 <<48/2=24>> 计算器标记",
    "data.language": "提示词与最终答案的语言",
    "data.system_prompt": "训练和作答时用的系统提示词（null = 内置的那个）",
    # training
    "training.num_epochs": "SFT：遍历数据的轮数",
    "training.max_steps": "SFT：优化器步数；> 0 时取代 num_epochs",
    "training.batch_size": "SFT：每个设备每步的样本数",
    "training.learning_rate": "SFT：峰值学习率",
    "training.gradient_accumulation_steps": "梯度累加成一次更新的步数",
    "training.lr_scheduler": "transformers 的学习率调度器名（cosine、linear、constant 等）",
    "training.warmup_ratio": "用于预热的步数占比",
    "training.weight_decay": "AdamW 的权重衰减",
    "training.max_grad_norm": "梯度裁剪的范数",
    "training.optim": "优化器；auto = 4 位时用 adamw_8bit，否则用 adamw_torch",
    "training.batching": "padding_free：一批样本首尾相接放在一行；packed：按 max_seq_length 拼行；padded：传统补齐；"
    "auto：注意力支持变长行时用 padding_free，否则用 padded",
    "training.gradient_checkpointing": "反向传播时重算激活值，以节省内存",
    "training.logging_steps": "每 N 步记录一次指标",
    "training.save_steps": "每 N 步保存一个检查点（--resume 从它继续）",
    "training.save_total_limit": "保留的检查点个数",
    "training.seed": "随机种子",
    "training.output_dir": "运行写入 <output_dir>/<run_name>/",
    "training.run_name": "运行的文件夹名（null = <stage>-<model>-<时间戳>）",
    "training.report_to": "metrics.jsonl 之外的指标记录器：tensorboard、"
    "mlflow（$MLFLOW_TRACKING_URI，否则用 output_dir 中的 SQLite 文件）、"
    "wandb（离线，除非 $WANDB_MODE=online）、trackio（本地），或 none",
    # dpo
    "dpo.sft_run": "要对齐其适配器的 SFT 运行（null = 最新完成的一个）",
    "dpo.pairs": "偏好数据 JSON/JSONL（null = `fastmath pairs` 生成的 <sft_run>/pairs.jsonl）",
    "dpo.beta": "向 SFT 策略回拉的强度",
    "dpo.loss_type": "TRL 的 DPO 损失（sigmoid、ipo、hinge 等）",
    "dpo.num_epochs": "DPO：遍历偏好对的轮数",
    "dpo.max_steps": "DPO：优化器步数；> 0 时取代 num_epochs",
    "dpo.batch_size": "DPO：每个设备每步的偏好对数",
    "dpo.learning_rate": "DPO：峰值学习率",
    "dpo.max_length": "提示词 + 回答的最大 token 数",
    "dpo.samples_per_problem": "`fastmath pairs`：每题采样的解答数",
    "dpo.temperature": "`fastmath pairs`：采样温度",
    "dpo.problems": "`fastmath pairs`：要采样的训练题数（null = 全部）",
    # grpo
    "grpo.sft_run": "GRPO 在其适配器上继续训练的 SFT 运行（null = 最新完成的一个）",
    "grpo.fresh_lora": "从 model.name 加一个新的 LoRA 开始，而不是用某个 SFT 运行的适配器",
    "grpo.problems": "取自 data.train 的训练题数（null = 全部）",
    "grpo.num_generations": "每题采样的回答数；奖励在这些回答之间比较",
    "grpo.max_completion_length": "回答的最大 token 数",
    "grpo.temperature": "采样（rollout）的温度",
    "grpo.beta": "向初始策略的 KL 惩罚（0 = 不惩罚，不做参考模型前向）",
    "grpo.loss_type": "TRL 的 GRPO 损失",
    "grpo.num_epochs": "GRPO：遍历题目的轮数",
    "grpo.max_steps": "GRPO：优化器步数；> 0 时取代 num_epochs",
    "grpo.batch_size": "GRPO：每个设备每步的题数（× num_generations 个回答）",
    "grpo.learning_rate": "GRPO：峰值学习率",
    "grpo.rewards": "奖励函数及其权重：correctness、answer_format、overlong（DAPO 的软惩罚），"
    "或你自己的 module.function（TRL 奖励函数的签名）",
    "grpo.overlong_buffer": "距 max_completion_length 还有多少 token 时开始超长惩罚",
    "grpo.use_vllm": "通过 vLLM 采样（hf 后端），每步把适配器不合并地交给 vLLM",
    "grpo.max_clipped_fraction": "健康检查：顶到 max_completion_length 的回答超过此比例时发出警告",
    "grpo.max_zero_spread_fraction": "健康检查：奖励全部相同的组超过此比例时发出警告",
    "grpo.stalled_steps": "健康检查：比例持续超限多少步后才发出警告",
    "grpo.stop_when_stalled": "健康警告一出现就提前结束运行，状态记为 stalled",
    # eval
    "eval.datasets": "任务（gsm8k、mgsm_en、svamp、cmath 等）、任务 .yaml 文件或数据文件",
    "eval.strategies": "提示策略，按运行顺序",
    "eval.samples": "每个数据集只取前 N 题（null = 全部）",
    "eval.batch_size": "每批的提示词数（null = 自动确定）",
    "eval.max_new_tokens": "回答的最大 token 数",
    "eval.num_shots": "few_shot：取自训练集的示例数",
    "eval.sc_samples": "self_consistency：参与投票的采样数（maj@k）",
    "eval.temperature": "self_consistency 与 ToT 候选的采样温度",
    "eval.seed": "few-shot 示例与每次采样的种子",
    "eval.tot_breadth": "ToT：束中保留的状态数",
    "eval.tot_depth": "ToT：最多轮数（解答行数）",
    "eval.tot_proposals": "ToT：每个状态采样的下一行数",
    "eval.engine": "生成引擎：hf（transformers）、vllm，或 auto（装有 vLLM 且有 CUDA 时用 vLLM，否则 hf）",
    "eval.tensor_parallel_size": "vllm：每个模型切分到的 GPU 数",
    "eval.data_parallel_size": "vllm：并行服务的模型副本数",
    "eval.unsafe_no_os_sandbox": "pot 不用操作系统隔离（bubblewrap）：模型写的代码将以你的身份运行，仅受进程内限制",
}
