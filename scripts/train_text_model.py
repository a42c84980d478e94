"""Train the embedded masked diffusion language model on Debian's fortunes.

    apt-get install fortunes && python scripts/train_text_model.py

Reads every fortune file under /usr/share/games/fortunes (entries separated by ``%`` lines),
keeps entries of 1..4 lines, folds whitespace, drops the entries the steering judge of `bench
text` flags (alt-profanity-check P(toxic) > 0.5, ``--drop-flagged``) so that the attribute stays
rare in the model's samples, trains a byte-level BPE tokenizer (2,048 tokens
including the specials) and a small bidirectional transformer (fksteer.embedded.text_model)
with the MDLM objective. Writes model.safetensors (float16), tokenizer.json, config.json and
training.json into src/fksteer/embedded/weights/fortunes-mdlm. Seeded and deterministic on one
machine. Needs the ``text`` extra (tokenizers, transformers).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fksteer.embedded.text_model import TEXT_MODEL_DIR, MaskedLanguageDenoiser

FORTUNES = Path("/usr/share/games/fortunes")
SPECIAL = {"pad": "<pad>", "eos": "<eos>", "mask": "<mask>"}
MAX_LEN = 48


def read_fortunes(directory: Path = FORTUNES) -> list[str]:
    """Short English entries: 1..4 lines, 20..240 characters, whitespace folded."""
    entries = []
    for path in sorted(directory.iterdir()):
        skip = path.suffix in {".dat", ".u8"} or path.name in {"art", "ascii-art"}
        if skip or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            lines = [line.strip() for line in entry.strip().splitlines() if line.strip()]
            folded = " ".join(" ".join(lines).split())
            if 1 <= len(lines) <= 4 and 20 <= len(folded) <= 240 and folded.isascii():
                entries.append(folded)
    return entries


def drop_flagged(texts: list[str], threshold: float) -> tuple[list[str], int]:
    """``texts`` without those the steering judge flags (P(toxic) > ``threshold``), and how many
    were dropped. The judge (alt-profanity-check) reads whole entries, as it reads samples."""
    if threshold >= 1.0:
        return texts, 0
    from profanity_check import predict_prob

    probabilities = predict_prob(texts)
    kept = [text for text, p in zip(texts, probabilities, strict=True) if p <= threshold]
    return kept, len(texts) - len(kept)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL["pad"], SPECIAL["eos"], SPECIAL["mask"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--drop-flagged", type=float, default=0.5, metavar="P",
        help="drop the entries alt-profanity-check gives P(toxic) > P (the steering judge of "
        "`bench text`), so that the attribute is rare in the model's samples; 1 keeps all",
    )
    parser.add_argument("--out", type=Path, default=TEXT_MODEL_DIR)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()

    texts, dropped = drop_flagged(read_fortunes(), args.drop_flagged)
    tokenizer = train_tokenizer(texts, args.vocab_size)
    pad, eos, mask = (tokenizer.token_to_id(SPECIAL[k]) for k in ("pad", "eos", "mask"))
    rows = []
    for encoding in tokenizer.encode_batch(texts):
        ids = encoding.ids[: MAX_LEN - 1] + [eos]
        rows.append(ids + [pad] * (MAX_LEN - len(ids)))
    data = torch.tensor(rows, dtype=torch.int64)  # (N, MAX_LEN)
    print(f"{len(texts)} entries ({dropped} flagged dropped), tokenizer and data in "
          f"{time.time() - start:.0f}s", flush=True)

    architecture = {"vocab_size": tokenizer.get_vocab_size(), "max_len": MAX_LEN, "mask_id": mask,
                    "dim": 128, "depth": 4, "heads": 4, "dropout": 0.1}
    model = MaskedLanguageDenoiser(**architecture)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = 200

    def learning_rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    losses = []
    model.train()
    for step in range(args.steps):
        batch = data[torch.randint(0, len(data), (args.batch_size,), generator=generator)]
        # t ~ U(1e-3, 1), stratified over the batch (MDLM's low-discrepancy sampler)
        offsets = torch.rand(1, generator=generator)
        t = ((torch.arange(args.batch_size) + offsets) / args.batch_size).clamp(1e-3, 1.0)
        masked = torch.rand(batch.shape, generator=generator) < t[:, None]  # (B, N)
        inputs = torch.where(masked, mask, batch)
        logits = model(inputs)  # (B, N, V)
        token_loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), batch, reduction="none"
        )  # (B, N)
        # MDLM ELBO weight under alpha(t) = 1 - t: 1/t on masked tokens
        loss = (token_loss * masked / t[:, None]).sum() / masked.numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 250 == 0:
            recent = sum(losses[-250:]) / 250
            print(f"step {step + 1}/{args.steps} loss {recent:.3f} {time.time() - start:.0f}s",
                  flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()},
              args.out / "model.safetensors")
    tokenizer.save(str(args.out / "tokenizer.json"))
    config = {"architecture": architecture, "special_tokens": SPECIAL}
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    report = {"entries": len(texts), "dropped_flagged": dropped,
              "drop_flagged_above": args.drop_flagged, "steps": args.steps,
              "batch_size": args.batch_size,
              "lr": args.lr, "seed": args.seed,
              "parameters": sum(p.numel() for p in model.parameters()),
              "loss_every_250_steps": [sum(losses[i : i + 250]) / 250
                                       for i in range(0, args.steps, 250)],
              "seconds": time.time() - start, "torch": torch.__version__}
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['seconds']:.0f}s")


if __name__ == "__main__":
    main()
