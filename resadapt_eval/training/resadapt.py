"""CAPO as published, for the `resadapt` allocator (`resadapt-eval train-resadapt`).

Each step is a contextual bandit on one training prompt. The frozen small encoder looks at the
frames and the question once; the head samples M per-frame allocations (Beta draws over [0.2, 2.0]);
each allocation goes through exactly the evaluation operator (`strategies/resadapt.frame_plan`:
chunk scale = mean of its frames', no dropping, no projection), the frozen backbone answers it
`answers` times at temperature 1, and the allocation's reward is the mean of the task scorer's main
metric over those answers. Free mode: the allocation's cost is what it spent. CAPO's advantages
(`capo_advantages`, pivot 0.5 * mean(c) + 0.5 * c0, tau 0.15, 0.7/1.3 shaping, lambda_enc 0.25,
lambda_gas 0.05) weight a PPO-clip loss on the per-frame Beta log-probabilities, plus the
concentration loss 5e-4 * mean(alpha + beta) and the temporal-similarity loss 1e-3 on the learned
per-frame features. No group is skipped.

One documented change: the cost is the actual visual-token retention (`--cost retention`, the
default), with the pivot centre re-derived for that unit (`capo.pivot_center`); `--cost
linear-scale` trains with the paper's unit.

After training, the mean retention of the deterministic action on training prompts is stored as
the allocator's `cost_level`: `--strategy resadapt`'s `steer=remap` reads it to map a budget onto the
scale range.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from resadapt_eval.allocator.frame_policy import FramePolicy
from resadapt_eval.strategies.resadapt import frame_plan
from resadapt_eval.training.allocator import Environment, plot_history, task_schedule
from resadapt_eval.training.capo import (CapoConfig, capo_advantages, concentration_loss, normalized_cost, pivot_center,
                                         ppo_clip_loss, temporal_similarity_loss)


@dataclass
class ResAdaptTrainConfig:
    tasks: list[str] = field(default_factory=lambda: ["probe-longvideo", "probe-which"])
    backbone: str = "tiny-bundled"     # answers the rollouts (frozen)
    encoder: str = "tiny-encoder"      # the allocator's own frozen encoder (training/bundled_encoder.py)
    encoder_side: int = 112
    steps: int = 600                   # prompts
    group: int = 8                     # allocations per prompt (the original's scale_n)
    answers: int = 2                   # sampled answers per allocation (the original's rollout.n)
    temperature: float = 1.0
    lr: float = 1e-3
    ppo_epochs: int = 2
    batch_prompts: int = 1             # prompts per optimizer step (the original: mini-batches of 32 prompts)
    init_logit: float = -10.0          # the head's start (frame_model.FrameAllocatorConfig.init_logit)
    init_scale: float | None = None    # the start's mean scale (None: the middle, as the original)
    pivot_c0: float = 0.4              # the pivot's centre c0 in the paper's linear-scale unit (its `cen0.4`)
    cost_penalty: float = 0.05         # lambda_gas
    clamp_correct: bool = True         # a correct answer's advantage >= 0.001 (the original; its `noclamp` tag: off)
    cost: str = "retention"
    standardize: bool = False          # the head's two additions (frame_model.FrameAllocatorConfig); False: the
    token_relevance: bool = False      # original's shape
    stats_prompts: int = 64            # per task: prompts whose observations give the standardisation
    concentration_weight: float = 5e-4
    similarity_weight: float = 1e-3
    hidden: int = 64
    layers: int = 2
    train_samples: int = 400
    level_prompts: int = 40            # per task: prompts whose deterministic retention gives cost_level
    seed: int = 0
    time_limit_s: float | None = None
    task_weights: dict[str, float] = field(default_factory=dict)
    task_cost_penalties: dict[str, float] = field(default_factory=dict)  # lambda_gas per task (else cost_penalty)
    min_scale: float = 0.2
    max_scale: float = 2.0
    init_from: str | None = None       # continue from this allocator folder (a curriculum's earlier stage)


def rollout(env: Environment, ctx, scales: torch.Tensor, answers: int, temperature: float,
            gen: torch.Generator, cache: dict | None = None) -> tuple[float, float]:
    """(mean main metric over `answers` sampled answers, token retention) of one per-frame allocation;
    `cache` holds this sample's encoded chunks across its allocations."""
    plan = frame_plan(ctx, scales.tolist())
    texts = env.backbone.sample_answers(plan, ctx.frames, ctx.sample.prompt, env.card.max_new_tokens, answers,
                                        temperature, gen, cache)
    scores = [float(env.adapter.score(ctx.sample, t)[0][env.adapter.main_metric]) for t in texts]
    return sum(scores) / len(scores), plan.tokens / plan.vanilla_tokens


def cost_level(policy: FramePolicy, envs: list[Environment], n: int, observe) -> dict[str, float]:
    """Mean retention of the deterministic action on the first `n` training prompts of each task,
    and over all of them ('all')."""
    levels, every = {}, []
    for env in envs:
        values = []
        for index in range(min(n, len(env.samples))):
            ctx = env.context(index, 1.0)
            with torch.no_grad():
                alpha, beta, _ = policy.distribution(observe(env, ctx))
                scales = policy.head.act(alpha, beta)[0]
            plan = frame_plan(ctx, scales.tolist())
            values.append(plan.tokens / plan.vanilla_tokens)
        levels[env.task] = sum(values) / len(values)
        every += values
    levels["all"] = sum(every) / len(every)
    return levels


def weights_sha256(folder: str) -> str:
    """The digest of an allocator folder's weights: which earlier stage a run continued from."""
    import hashlib

    from resadapt_eval.allocator.model import WEIGHTS_NAME

    return hashlib.sha256((Path(folder) / WEIGHTS_NAME).read_bytes()).hexdigest()


def start_from(policy: FramePolicy, folder: str) -> None:
    """Load an earlier stage's weights (its standardisation included) into the new head; its shape
    and its encoder must be the ones this run asks for."""
    from resadapt_eval.allocator.frame_model import FrameAllocatorHead
    from resadapt_eval.allocator.model import CONFIG_NAME
    from resadapt_eval.core.types import UserError

    if not (Path(folder) / CONFIG_NAME).is_file():
        raise UserError(f"--init-from {folder}: no allocator there (no {CONFIG_NAME}); train the earlier stage first")
    earlier = FrameAllocatorHead.load(folder)
    mine, theirs = asdict(policy.head.config), asdict(earlier.config)
    shape = ("token_dim", "text_dim", "tokens_per_frame", "hidden", "heads", "layers", "min_scale", "max_scale",
             "encoder", "encoder_side", "encoder_fingerprint", "standardize", "token_relevance")
    differ = [k for k in shape if mine[k] != theirs[k]]
    if differ:
        raise UserError(f"--init-from {folder}: its " + ", ".join(f"{k} {theirs[k]!r}" for k in differ)
                         + " differ from this run's " + ", ".join(f"{mine[k]!r}" for k in differ))
    policy.head.load_state_dict(earlier.state_dict())
    policy.head.config.init_logit, policy.head.config.init_scale = earlier.config.init_logit, earlier.config.init_scale


def train(config: ResAdaptTrainConfig, out: str | Path, progress: bool = True, log=print) -> dict:
    from resadapt_eval.backbones import load_backbone

    for what, per_task in (("weights", config.task_weights), ("cost penalties", config.task_cost_penalties)):
        unknown = sorted(set(per_task) - set(config.tasks))
        if unknown:
            raise ValueError(f"task {what} for tasks not trained on: {', '.join(unknown)}")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    answer_gen = torch.Generator().manual_seed(config.seed + 1)
    backbone = load_backbone(config.backbone)
    policy = FramePolicy.create(config.encoder, config.encoder_side, hidden=config.hidden, layers=config.layers,
                                min_scale=config.min_scale, max_scale=config.max_scale, init_logit=config.init_logit,
                                init_scale=config.init_scale, standardize=config.standardize,
                                token_relevance=config.token_relevance)
    if config.init_from:
        start_from(policy, config.init_from)
    head = policy.head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=0.01)
    envs = [Environment(t, backbone, config.train_samples, config.seed) for t in config.tasks]
    capo = replace(CapoConfig(), pivot_center=pivot_center(config.cost, config.min_scale, config.max_scale,
                                                           config.pivot_c0), clamp_correct=config.clamp_correct,
                   gas=config.cost_penalty)
    capo_for = {t: replace(capo, gas=float(config.task_cost_penalties.get(t, config.cost_penalty)))
                for t in config.tasks}
    observed: dict[tuple[str, str], object] = {}
    chunk_caches: dict[tuple[str, str], dict] = {}

    def observe(env: Environment, ctx):
        key = (env.task, ctx.sample.id)
        if key not in observed:  # the encoder is frozen: look once per sample
            observed[key] = policy.observe(ctx.frames.pixels, ctx.sample.question or ctx.sample.prompt)
        return observed[key]

    def update(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PPO epochs over a batch of prompts: the losses are averaged over its prompts before each step."""
        for _ in range(config.ppo_epochs):
            opt.zero_grad()
            parts = []
            for obs, scales, logp_old, adv in batch:
                alpha, beta, feature = policy.distribution(obs)
                mask = torch.ones_like(scales)
                logp = head.log_prob(alpha.expand_as(scales), beta.expand_as(scales), scales)
                loss = ppo_clip_loss(logp, logp_old, adv, mask)
                conc = concentration_loss(alpha, beta, mask[:1])
                mean_scale = head.to_scale(alpha / (alpha + beta))
                sim = temporal_similarity_loss(feature.detach(), mean_scale, mask[:1])
                total = loss + config.concentration_weight * conc + config.similarity_weight * sim
                (total / len(batch)).backward()
                parts.append((loss.detach(), conc.detach(), sim.detach()))
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
        return tuple(torch.stack(x).mean() for x in zip(*parts))

    if config.standardize and not config.init_from:  # frozen statistics of the encoder's features on the training prompts
        seen = [observe(env, env.context(i, 1.0)) for env in envs for i in range(min(config.stats_prompts,
                                                                                      len(env.samples)))]
        head.fit_input_stats([o.frames for o in seen], [o.question for o in seen])
    pending: list = []
    loss = conc = sim = torch.zeros(())
    history: list[dict] = []
    start = time.perf_counter()
    schedule = task_schedule([float(config.task_weights.get(t, 1.0)) for t in config.tasks], config.steps)
    bar = tqdm(range(config.steps), desc="CAPO", unit="prompt", disable=not progress, dynamic_ncols=True)
    for step in bar:
        env = envs[schedule[step]]
        ctx = env.context(rng.randrange(len(env.samples)), 1.0)
        obs = observe(env, ctx)
        with torch.no_grad():
            alpha, beta, _ = policy.distribution(obs)
            draws = [head.sample(alpha, beta, gen) for _ in range(config.group)]
        scales = torch.cat([d[0] for d in draws])
        logp_old = torch.cat([d[1] for d in draws])
        cache = chunk_caches.setdefault((env.task, ctx.sample.id), {})
        results = [rollout(env, ctx, s, config.answers, config.temperature, answer_gen, cache) for s in scales]
        reward = torch.tensor([r for r, _ in results])
        retention = torch.tensor([c for _, c in results])
        cost = normalized_cost(config.cost, scales, retention, config.min_scale, config.max_scale)
        adv = capo_advantages(reward, cost, capo_for[env.task])
        pending.append((obs, scales, logp_old, adv))
        if len(pending) == config.batch_prompts or step == config.steps - 1:
            loss, conc, sim = update(pending)
            pending = []
        with torch.no_grad():
            alpha, beta, _ = policy.distribution(obs)
        evidence = ctx.sample.meta.get("evidence") or {}
        mean_u = (alpha / (alpha + beta))[0].detach()
        row = {"step": step + 1, "task": env.task, "reward": reward.mean().item(), "cost": retention.mean().item(),
               "loss": loss.item(), "concentration": float(conc.detach()), "similarity": float(sim.detach()),
               "mean_scale": float(head.to_scale(mean_u).mean()), "seconds": time.perf_counter() - start}
        chunk = evidence.get("chunk") if isinstance(evidence, dict) else None
        if chunk is not None:  # how much more the evidence chunk's frames get than the rest, in mean action
            step_frames = ctx.geometry.temporal_patch_size
            ev = mean_u[chunk * step_frames:(chunk + 1) * step_frames].mean()
            row["evidence_ratio"] = float(ev / mean_u.mean().clamp(min=1e-6))
        history.append(row)
        if (step + 1) % 25 == 0:
            recent = history[-50:]
            r = sum(h["reward"] for h in recent) / len(recent)
            c = sum(h["cost"] for h in recent) / len(recent)
            ev = [h["evidence_ratio"] for h in recent if "evidence_ratio" in h]
            e = sum(ev) / len(ev) if ev else float("nan")
            bar.set_postfix(reward=f"{r:.2f}", retention=f"{c:.3f}", evidence=f"{e:.3f}")
            if not progress:
                log(f"step {step + 1}/{config.steps} reward {r:.3f} retention {c:.3f} evidence ratio {e:.3f}")
        if config.time_limit_s and time.perf_counter() - start > config.time_limit_s:
            if pending:  # the prompts already rolled out still train
                update(pending)
            log(f"time limit reached after {step + 1} prompts")
            break
    head.eval()
    levels = cost_level(policy, envs, config.level_prompts, observe)
    out = Path(out)
    meta = {"trained": {**asdict(config), "method": "capo-free", "pivot_center": capo.pivot_center,
                        "backbone_fingerprint": backbone.fingerprint, "cost_level": levels["all"],
                        "init_from_sha256": weights_sha256(config.init_from) if config.init_from else None,
                        "cost_levels": levels, "prompts": len(history),
                        "seconds": round(time.perf_counter() - start, 1)}}
    head.save(out, extra=meta)
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    plot_history(history, out / "training.png", keys=("reward", "cost", "mean_scale", "evidence_ratio"))
    log(f"cost level (retention of the deterministic action): " + ", ".join(f"{k} {v:.3f}" for k, v in levels.items()))
    return meta
