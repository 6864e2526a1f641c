"""Train the bundled encoder (`tiny-encoder`): the small frozen model that `resadapt`'s allocator looks through.

ResAdapt plans with its own small vision-language model (SmolVLM2-256M), a general model that sees
colour as well as shape. The bundled backbone's vision tower was pretrained on the probes' glyph
classes only (textures, characters), so it barely keeps colour: a linear probe reads probe-which's
border colour from its features in under half of held-out tiles (chance a third; `python
scripts/resadapt_diagnostics.py`), while probe-which's question names the tile by its border colour.

This encoder is `tiny-bundled` with its vision tower pretrained once more, the same dense per-token
objective as the backbone's stage 1 (`bundled_model.py`), with the three border colours added to the
glyph classes, on single frames at the square size the allocator looks at (112 px). Its language
model is tiny-bundled's, unchanged: the question's hidden states already tell the colours apart. It is
a folder of its own: the backbone's weights are untouched, as SmolVLM2 is separate from Qwen.

Run `python -m resadapt_eval.training.bundled_encoder` (or `make bundled-encoder`). Steps define the
recipe and the seed is fixed, so a rerun repeats it; it prints loss and held-out colour accuracy.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from resadapt_eval import probes
from resadapt_eval.training.bundled_model import (MONITOR_SEED, InputBuilder, _cosine, dense_loss, resize_chunk,
                                                  token_labels)

BORDERS = tuple(f"border:{c}" for c in probes.BORDER_COLOURS)
CLASSES = probes.CLASSES + BORDERS
BORDER_ID = {name: len(probes.CLASSES) + i for i, name in enumerate(BORDERS)}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "assets" / "tiny-encoder"


@dataclass
class EncoderRecipe:
    base: str = "tiny-bundled"   # the model whose tower is pretrained further and whose language model is kept
    seed: int = 0
    side: int = 112              # frames are squares of this side, as the allocator's encoder sees them
    steps: int = 500
    batch: int = 24
    lr: float = 5e-4
    evidence_weight: float = 10.0
    evidence_share: float = 0.7  # share of examples that show a frame holding evidence
    mix: dict[str, float] = field(default_factory=lambda: {
        "probe-which": 0.5, "probe-videoqa": 0.125, "probe-longvideo": 0.125, "probe-grounding": 0.125,
        "probe-math": 0.125})


def labelled_boxes(item: probes.ProbeItem) -> list[tuple[int, int, int, int, int, int]]:
    """The item's glyph boxes plus, on probe-which, each tile's bordered square labelled by its colour."""
    boxes = list(item.boxes)
    if item.task == "probe-which":
        for tile in (item.evidence, item.evidence["distractor"]):
            boxes += [(f, *tile["outer_box"], BORDER_ID[f"border:{tile['colour']}"]) for f in tile["frames"]]
    return boxes


def tile_colour_logits(feats: torch.Tensor, head: torch.nn.Module, tile: dict, src: int, side: int,
                       factor: int = 28) -> torch.Tensor:
    """The border-class logits averaged over the merged tokens that a tile's centre falls in (one frame)."""
    per = side // factor
    y0, x0, y1, x1 = tile["outer_box"]
    r, c = min(per - 1, int((y0 + y1) / 2 * side / src) // factor), min(per - 1, int((x0 + x1) / 2 * side / src) // factor)
    return head(feats[r * per + c])[len(probes.CLASSES):]


class EncoderTrainer:
    def __init__(self, recipe: EncoderRecipe, threads: int = 2):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from resadapt_eval.backbones import resolve_alias

        torch.set_num_threads(threads)
        torch.manual_seed(recipe.seed)
        self.recipe, self.rng = recipe, random.Random(recipe.seed)
        self.base = Path(resolve_alias(recipe.base))
        self.model = AutoModelForImageTextToText.from_pretrained(self.base, dtype=torch.float32)
        self.processor = AutoProcessor.from_pretrained(self.base)
        self.builder = InputBuilder(self.processor)
        self.head = torch.nn.Linear(self.model.config.text_config.hidden_size, len(CLASSES))
        self.start = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", flush=True)

    def example(self, item: probes.ProbeItem, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        side = self.recipe.side
        H, W = item.pixels.shape[1:3]
        return (resize_chunk(item.pixels[[frame]], (side, side)),
                token_labels(labelled_boxes(item), (frame,), (H, W), (side, side), item.evidence, classes=CLASSES))

    def pick_frame(self, item: probes.ProbeItem) -> int:
        n = item.pixels.shape[0]
        if self.rng.random() >= self.recipe.evidence_share:
            return self.rng.randrange(n)
        frames = list(item.evidence["frames"])
        if item.task == "probe-which":
            frames += item.evidence["distractor"]["frames"]
        return self.rng.choice(frames)

    @torch.no_grad()
    def colour_accuracy(self, n: int = 48) -> float:
        """Held-out share of probe-which tiles whose border colour the tower's tokens read right."""
        visual = self.model.model.visual.eval()
        ok = total = 0
        for i in range(n):
            item = probes.GENERATORS["probe-which"](MONITOR_SEED, i)
            for tile in (item.evidence, item.evidence["distractor"]):
                chunk, _ = self.example(item, tile["frames"][0])
                pix, grids = self.builder.pixels([chunk])
                feats = visual(pix, grid_thw=grids).pooler_output
                logits = tile_colour_logits(feats, self.head, tile, item.pixels.shape[1], self.recipe.side)
                ok += int(BORDERS[int(logits.argmax())] == f"border:{tile['colour']}")
                total += 1
        visual.train()
        return ok / total

    def train(self) -> None:
        r = self.recipe
        visual = self.model.model.visual
        params = list(visual.parameters()) + list(self.head.parameters())
        opt = torch.optim.AdamW(params, lr=r.lr, betas=(0.9, 0.98), weight_decay=0.01)
        sched = _cosine(opt, r.steps, warmup=25)
        visual.train()
        names, weights = zip(*r.mix.items())
        counter = 0
        self.log(f"before: held-out border colour read right {self.colour_accuracy():.2f}")
        for step in range(1, r.steps + 1):
            chunks, labels = [], []
            for _ in range(r.batch):
                task = self.rng.choices(names, weights)[0]
                item = probes.BUNDLED_TRAINING_GENERATORS[task](probes.TRAIN_SEED_BASE + r.seed, counter)
                counter += 1
                chunk, label = self.example(item, self.pick_frame(item))
                chunks.append(chunk)
                labels.append(label)
            pix, grids = self.builder.pixels(chunks)
            loss = dense_loss(self.head(visual(pix, grid_thw=grids).pooler_output), torch.cat(labels),
                              r.evidence_weight)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0 or step == 1:
                self.log(f"step {step}/{r.steps} loss {loss.item():.4f}")
            if step % 250 == 0 or step == r.steps:
                self.log(f"held-out border colour read right {self.colour_accuracy():.2f}")

    def save(self, out: Path) -> None:
        """The base folder (tokenizer, processor, chat template) with the new weights and this recipe."""
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(self.base, out, ignore=shutil.ignore_patterns("*.safetensors", "recipe.json"))
        self.model.eval()
        self.model.save_pretrained(out)
        (out / "recipe.json").write_text(json.dumps({"encoder_recipe": asdict(self.recipe)}, indent=2) + "\n")
        self.log(f"saved to {out}")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--steps", type=int, default=EncoderRecipe.steps)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a busy machine)")
    args = ap.parse_args(argv)
    trainer = EncoderTrainer(EncoderRecipe(steps=args.steps), threads=args.threads)
    trainer.train()
    trainer.save(Path(args.out))


if __name__ == "__main__":
    main()
