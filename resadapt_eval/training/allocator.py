"""CAPO training of an allocator over a frozen backbone (`resadapt-eval train-allocator`).

Each step is a contextual bandit on one training prompt: the allocator looks at the thumbnails
and the question once, samples a group of M allocations, the frozen backbone answers each one
greedily through exactly the evaluation path (plan -> execute -> the task's own scorer), and the
group's rewards and *actual token* retentions give CAPO advantages. The head is updated with
PPO-clip on the Beta log-probabilities plus the temporal-similarity regulariser.

Two modes: `budget` (default) projects every sampled allocation onto a training budget drawn per
prompt, exactly as `--strategy resadapt` does at evaluation, so the head learns where to put a
fixed amount of tokens; `free` uses the sampled scales as they are (the original's setting, where
CAPO's cost shaping also teaches how much to spend).

A free-mode task can start from an oracle warm start (`warm_start`): for some training prompts the
backbone is rolled out at a grid of uniform scales, the smallest scale from which every larger one
still answers right becomes the target, and the head is fitted to it by Beta likelihood before CAPO
begins. Two free-mode CAPO runs from scratch on probe-math settled on one size for every image
(121 tokens, whatever the text size), although the size is in the features (a linear probe on them
reads the log text size at r = 0.95): the warm start gives CAPO a per-prompt starting point to refine.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from resadapt_eval.core.budget import parse_budget
from resadapt_eval.core.strategy import Context
from resadapt_eval.strategies.resadapt_budget import allocation_plan, parse_drop
from resadapt_eval.training.capo import CapoConfig, capo_advantages, ppo_clip_loss, temporal_similarity_loss
from resadapt_eval.allocator.policy import Policy

MODES = ("budget", "free")
ORACLE_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class TrainConfig:
    tasks: list[str] = field(default_factory=lambda: ["probe-videoqa", "probe-longvideo"])
    backbone: str = "tiny-bundled"
    steps: int = 600                  # prompts
    group: int = 8                    # allocations sampled per prompt (M)
    lr: float = 3e-3
    ppo_epochs: int = 2
    mode: str = "budget"
    budgets: list[float] = field(default_factory=lambda: [0.1, 0.25])
    drop: str = "none"                # chunk dropping in rollouts, as the strategy's option
    task_budgets: dict[str, list[float]] = field(default_factory=dict)  # per-task overrides of budgets
    task_drop: dict[str, str] = field(default_factory=dict)             # per-task overrides of drop
    task_mode: dict[str, str] = field(default_factory=dict)             # per-task overrides of mode
    frames: int | None = None         # frames per video (default: the task card's)
    train_samples: int = 400          # per task, from the probe training seeds
    temporal_weight: float = 0.1
    hidden: int = 64
    layers: int = 2
    thumb_scale: float = 0.5  # 0.3 measured too small to read the probes glyphs (linear probe 52%, 0.5: 87%)
    seed: int = 0
    time_limit_s: float | None = None
    task_weights: dict[str, float] = field(default_factory=dict)  # share of CAPO prompts per task (default 1 each)
    warm_start: dict[str, int] = field(default_factory=dict)  # free-mode task -> prompts for the oracle warm start
    warm_epochs: int = 30
    capo: CapoConfig = field(default_factory=CapoConfig)


@dataclass
class Rollouts:
    scales: torch.Tensor   # (M, K)
    logp: torch.Tensor     # (M, K)
    reward: torch.Tensor   # (M,)
    cost: torch.Tensor     # (M,) token retention


class Environment:
    """The training prompts of one task and how one allocation of one prompt is scored."""

    def __init__(self, task: str, backbone, n: int, seed: int, frames: int | None = None):
        from resadapt_eval.adapters import ADAPTERS
        from resadapt_eval.adapters.base import TaskCard
        from resadapt_eval.pipeline.media import FrameCache
        from resadapt_eval.probes import ensure_built_train

        root = ensure_built_train(task, n=n, seed=seed)
        self.card = TaskCard.load(task, str(root))
        self.adapter = ADAPTERS.get(self.card.adapter)()
        self.samples = [s for s in self.adapter.load(self.card) if s.media is not None]
        self.backbone = backbone
        self.cache = FrameCache()
        self.task = task
        self.frames = frames or self.card.frames

    def context(self, index: int, budget: float) -> Context:
        sample = self.samples[index % len(self.samples)]
        frames, _ = self.cache.load(sample.media_kind, sample.media, self.frames)
        return Context.build(sample, frames, self.backbone.geometry, parse_budget(str(budget)), 0, self.backbone,
                             self.task)

    def reward(self, ctx: Context, scales: torch.Tensor, fit: str, drop=("none", 0.0)) -> tuple[float, float]:
        """(the scorer's main metric in [0, 1], token retention) of one allocation, rolled out greedily."""
        plan = allocation_plan(ctx, scales.tolist(), drop, fit)
        out = self.backbone.execute(plan, ctx.frames, ctx.sample.prompt, self.card.max_new_tokens)
        score, _ = self.adapter.score(ctx.sample, out.text)
        return float(score[self.adapter.main_metric]), out.visual_tokens / plan.vanilla_tokens


def task_schedule(weights: list[float], steps: int) -> list[int]:
    """Which task each CAPO prompt comes from: smooth weighted round-robin, deterministic; equal
    weights give plain alternation (0, 1, 2, 0, ...), weight 0 never."""
    if not weights or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"task weights must be >= 0 with a positive sum, got {weights}")
    credit, order, total = [0.0] * len(weights), [], sum(weights)
    for _ in range(steps):
        credit = [c + w for c, w in zip(credit, weights)]
        pick = max(range(len(weights)), key=lambda i: (credit[i], -i))
        credit[pick] -= total
        order.append(pick)
    return order


def oracle_scale(env: Environment, ctx: Context, grid: tuple[float, ...] = ORACLE_GRID) -> float:
    """The smallest grid scale from which every larger one still answers right (one scale for all
    chunks, budget ignored); the largest when even it fails. Walking down from the top keeps a lucky
    guess at a tiny scale (chance is 10-25% on the probes) from becoming the target."""
    chunks = ctx.geometry.n_chunks(ctx.frames.count)  # an image is one chunk
    best = max(grid)
    for scale in sorted(grid, reverse=True):
        reward, _ = env.reward(ctx, torch.full((chunks,), scale), "none")
        if reward < 1.0:
            break
        best = scale
    return best


def warm_start(policy: Policy, env: Environment, n: int, epochs: int, lr: float, gen: torch.Generator,
               observed: dict, log=print) -> dict:
    """Fit the head to the oracle scales of `n` training prompts of `env` by Beta likelihood.

    The head is shared by every task it is trained on. Measured: warm-starting probe-math this way
    (and, in a second run, fitting only the mean scale) before CAPO on the two budget-mode video
    probes left their reward at chance for 500-675 prompts, where it reached 0.9 by 450 without
    the warm start; so use it for allocators trained on free-mode tasks alone."""
    head = policy.head
    data = []
    for index in range(min(n, len(env.samples))):
        ctx = env.context(index, 1.0)
        key = (env.task, ctx.sample.id)
        if key not in observed:
            observed[key] = policy.observe(ctx)
        data.append((observed[key], oracle_scale(env, ctx)))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    loss = torch.zeros(())
    for _ in range(epochs):
        for j in torch.randperm(len(data), generator=gen).tolist():
            obs, target = data[j]
            alpha, beta = policy.distribution(obs)
            loss = -head.log_prob(alpha, beta, torch.full_like(alpha, target)).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
    targets = [t for _, t in data]
    summary = {"task": env.task, "prompts": len(data), "epochs": epochs, "oracle_mean": sum(targets) / len(targets),
               "oracle_min": min(targets), "oracle_max": max(targets), "last_nll": float(loss.detach())}
    log(f"warm start on {env.task}: {len(data)} oracle scales (mean {summary['oracle_mean']:.2f}), "
        f"{epochs} epochs, last NLL {summary['last_nll']:.3f}")
    return summary


def train(config: TrainConfig, out: str | Path, progress: bool = True, log=print) -> dict:
    from resadapt_eval.backbones import load_backbone

    modes = {t: config.task_mode.get(t, config.mode) for t in config.tasks}
    bad = sorted({m for m in modes.values() if m not in MODES})
    if bad:
        raise ValueError(f"mode must be one of {MODES}, got {', '.join(bad)}")
    unknown = sorted((set(config.task_budgets) | set(config.task_drop) | set(config.task_mode)
                      | set(config.warm_start) | set(config.task_weights)) - set(config.tasks))
    if unknown:
        raise ValueError(f"per-task settings for tasks not trained on: {', '.join(unknown)}")
    not_free = sorted(t for t in config.warm_start if modes[t] != "free")
    if not_free:
        raise ValueError(f"the oracle warm start is for free-mode tasks; {', '.join(not_free)} train in budget mode")
    drops = {t: parse_drop(config.task_drop.get(t, config.drop)) for t in config.tasks}
    budgets = {t: config.task_budgets.get(t, config.budgets) for t in config.tasks}
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    backbone = load_backbone(config.backbone)
    policy = Policy.create(backbone, hidden=config.hidden, layers=config.layers, thumb_scale=config.thumb_scale)
    head = policy.head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=0.01)
    envs = [Environment(t, backbone, config.train_samples, config.seed, config.frames) for t in config.tasks]
    observed: dict[tuple[str, str], object] = {}
    history: list[dict] = []
    start = time.perf_counter()
    warm = [warm_start(policy, env, config.warm_start[env.task], config.warm_epochs, config.lr, gen, observed, log)
            for env in envs if config.warm_start.get(env.task)]
    bar = tqdm(range(config.steps), desc="CAPO", unit="prompt", disable=not progress, dynamic_ncols=True)
    schedule = task_schedule([float(config.task_weights.get(t, 1.0)) for t in config.tasks], config.steps)
    for step in bar:
        env = envs[schedule[step]]
        budget = rng.choice(budgets[env.task])
        ctx = env.context(rng.randrange(len(env.samples)), budget)
        key = (env.task, ctx.sample.id)
        if key not in observed:  # thumbnails and question features are frozen: look once per sample
            observed[key] = policy.observe(ctx)
        obs = observed[key]
        with torch.no_grad():
            alpha, beta = policy.distribution(obs)
            draws = [head.sample(alpha, beta, gen) for _ in range(config.group)]
        scales = torch.cat([d[0] for d in draws])
        logp_old = torch.cat([d[1] for d in draws])
        fit = "exact" if modes[env.task] == "budget" else "none"
        results = [env.reward(ctx, s, fit, drops[env.task]) for s in scales]
        roll = Rollouts(scales, logp_old, torch.tensor([r for r, _ in results]), torch.tensor([c for _, c in results]))
        adv = capo_advantages(roll.reward, roll.cost, config.capo)
        mask = torch.ones_like(roll.scales, dtype=torch.bool)
        # In budget mode the projection fixes the cost, so a group whose answers all agree says nothing
        # about where tokens should go (its cost differences are size snapping). Updating on it only
        # sharpens or drifts the policy: measured, a run at 0.95 reward fell to 0.48 within 200 prompts.
        # Such groups are skipped, as DAPO's dynamic sampling does.
        informative = modes[env.task] != "budget" or roll.reward.std(unbiased=False) >= config.capo.min_std
        loss = reg = torch.zeros(())
        for _ in range(config.ppo_epochs if informative else 0):
            alpha, beta = policy.distribution(obs)
            logp = head.log_prob(alpha.expand_as(roll.scales), beta.expand_as(roll.scales), roll.scales)
            loss = ppo_clip_loss(logp, roll.logp, adv, mask.float())
            mean_scale = head.to_scale(alpha / (alpha + beta))
            reg = temporal_similarity_loss(obs.chunks[None], mean_scale, mask[:1])
            total = loss + config.temporal_weight * reg
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
        with torch.no_grad():
            mean_u = (alpha / (alpha + beta))[0]
        history.append({"step": step + 1, "task": env.task, "budget": budget, "reward": roll.reward.mean().item(),
                        "cost": roll.cost.mean().item(), "loss": loss.item(), "reg": float(reg.detach()),
                        "updated": bool(informative),
                        "top_share": float(mean_u.max() / mean_u.sum()), "seconds": time.perf_counter() - start})
        if (step + 1) % 25 == 0:
            recent = history[-50:]
            bar.set_postfix(reward=f"{sum(h['reward'] for h in recent) / len(recent):.2f}",
                            cost=f"{sum(h['cost'] for h in recent) / len(recent):.3f}")
            if not progress:
                log(f"step {step + 1}/{config.steps} reward {sum(h['reward'] for h in recent) / len(recent):.3f} "
                    f"cost {sum(h['cost'] for h in recent) / len(recent):.3f}")
        if config.time_limit_s and time.perf_counter() - start > config.time_limit_s:
            log(f"time limit reached after {step + 1} prompts")
            break
    out = Path(out)
    head.eval()
    meta = {"trained": {**asdict(config), "backbone_fingerprint": backbone.fingerprint, "warm_started": warm,
                        "prompts": len(history), "seconds": round(time.perf_counter() - start, 1)}}
    head.save(out, extra=meta)
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    plot_history(history, out / "training.png")
    return meta


def plot_history(history: list[dict], path: Path, window: int = 50,
                 keys: tuple[str, ...] = ("reward", "cost", "loss", "top_share")) -> None:
    """Reward, cost, loss and the top chunk's share of the mean action over training, one running mean
    per task (tasks alternate, so a mixed curve would average unlike budgets together)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(keys), figsize=(15, 3.2))
    tasks = sorted({h["task"] for h in history})
    for ax, key in zip(axes, keys):
        for task in tasks:
            rows = [h for h in history if h["task"] == task]
            steps = np.array([h["step"] for h in rows])
            values = np.array([h.get(key, np.nan) for h in rows], dtype=float)
            w = min(window, len(values))
            if w:
                smooth = np.convolve(values, np.ones(w) / w, mode="valid")
                ax.plot(steps[w - 1:], smooth, label=task)
        ax.set_title(f"{key} (running mean of {window})")
        ax.set_xlabel("prompt")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
