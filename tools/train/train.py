#!/usr/bin/env python3
"""Trains asa-tiny and a full-attention baseline of the same size, end to end.

  tokenizer (HF tokenizers, byte-level BPE) -> token streams -> both models
  trained step by step on the same batches with the same schedule -> held-out
  loss/perplexity -> export of the ASA model (ASA-SPEC sections 1-2, bf16)
  -> model card, metrics, loss curves, greedy samples.

Usage (see README.md; gpu_train.sh is the GPU command):
  python3 train.py --corpus DIR --out DIR [--time-budget 500] [...]

Everything the run writes goes to --out (at most 6 files):
  model-0000k-of-0000n.safetensors  the exported weights (shards < 16 MiB)
  asa-tiny-files.tar.gz             the rest of the model directory and the
                                    training record (install_model.sh unpacks)
  metrics.json, train.log           also inside the tarball
The step count is fixed after a few timed steps so that training ends before
the wall-clock budget; the learning-rate schedule knows it from then on.
"""
import argparse
import json
import lzma
import math
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import asa_torch  # noqa: E402
import export  # noqa: E402
import card  # noqa: E402
import plot_loss  # noqa: E402

T0 = time.time()
LOGF = None

BOS, EOS = "<|bos|>", "<|eos|>"
PROMPTS = [
    "Call me Ishmael. Some years ago",
    "It is a truth universally acknowledged, that",
    "In the beginning, God",
    "Fellow-Citizens of the Senate and House of Representatives:",
    "The President said that the people of the United States",
    "Mr. Darcy looked at Elizabeth and",
]
TOKENIZER_CHECK_EXTRA = [
    "Hello, world!  Two  spaces,\ttab, newline\n\nand 1234567 digits; e.g. 3.14159.",
    "Don't, won't, it's, they're, we'll -- \"quoted\" (parens) [brackets] {braces}",
    "Unicode: caf\u00e9, na\u00efve, \u2014 dash, \u00a3 5, \u00b0C, \u4e2d\u6587, emoji \U0001F600.",
    "   leading spaces and trailing spaces   ",
]


def log(msg):
    line = "[%7.1fs] %s" % (time.time() - T0, msg)
    print(line, flush=True)
    if LOGF:
        LOGF.write(line + "\n")
        LOGF.flush()


# ---------------------------------------------------------------- corpus

def read_docs(path):
    with lzma.open(path, "rb") as f:
        text = f.read().decode("utf-8")
    return [d.strip("\n") for d in text.split("\n\f\n") if d.strip()]


# ---------------------------------------------------------------- tokenizer

class HFTokenizer:
    """Byte-level BPE trained with Hugging Face tokenizers."""

    def __init__(self, docs, vocab_size):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                      special_tokens=[BOS, EOS],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
        self.bos, self.eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(
            single=BOS + " $A", pair=BOS + " $A " + BOS + " $B", special_tokens=[(BOS, self.bos)])
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.kind = "tokenizers %s byte-level BPE" % __import__("tokenizers").__version__

    def encode_docs(self, docs):
        return [e.ids for e in self.tok.encode_batch(docs, add_special_tokens=False)]

    def encode(self, text):
        """With the post-processor: BOS first."""
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)

    def save(self, path):
        self.tok.save(path)


def _byte_chars():
    """GPT-2's byte -> printable character map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class ByteTokenizer:
    """Dry-run stand-in where tokenizers is not installed: a byte-level BPE
    with no merges (ids: BOS 0, EOS 1, byte b -> 2 + b), written as a valid
    tokenizer.json of the same structure."""

    def __init__(self, docs, vocab_size):
        self.bos, self.eos, self.vocab_size = 0, 1, 258
        self.kind = "byte-level BPE without merges (dry-run stand-in)"

    def encode_docs(self, docs):
        return [[2 + b for b in d.encode("utf-8")] for d in docs]

    def encode(self, text):
        return [self.bos] + [2 + b for b in text.encode("utf-8")]

    def decode(self, ids):
        return bytes(i - 2 for i in ids if i >= 2).decode("utf-8", errors="replace")

    def save(self, path):
        m = _byte_chars()
        vocab = {BOS: 0, EOS: 1}
        vocab.update({m[b]: 2 + b for b in range(256)})
        special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False,  # noqa: E731
                                "rstrip": False, "normalized": False, "special": True}
        j = {"version": "1.0", "truncation": None, "padding": None,
             "added_tokens": [special(0, BOS), special(1, EOS)],
             "normalizer": None,
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                               "use_regex": True},
             "post_processor": {"type": "TemplateProcessing",
                                "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                                           {"Sequence": {"id": "A", "type_id": 0}}],
                                "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}},
                                         {"SpecialToken": {"id": BOS, "type_id": 0}},
                                         {"Sequence": {"id": "B", "type_id": 0}}],
                                "special_tokens": {BOS: {"id": BOS, "ids": [0], "tokens": [BOS]}}},
             "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                         "use_regex": True},
             "model": {"type": "BPE", "dropout": None, "unk_token": None,
                       "continuing_subword_prefix": None, "end_of_word_suffix": None,
                       "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                       "vocab": vocab, "merges": []}}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)


def make_stream(encoded, bos, eos):
    n = sum(len(e) + 2 for e in encoded)
    out = np.empty(n, dtype=np.int32)
    i = 0
    for e in encoded:
        out[i] = bos
        out[i + 1:i + 1 + len(e)] = e
        out[i + 1 + len(e)] = eos
        i += len(e) + 2
    return out


# ---------------------------------------------------------------- training

class Batches:
    """Epochs of non-overlapping windows of T+1 tokens at a random shift, in
    random order; the same sequence of batches for every consumer."""

    def __init__(self, stream, T, batch, seed, device):
        self.stream, self.T, self.batch, self.device = stream, T, batch, device
        self.rng = np.random.default_rng(seed)
        self.per_epoch = (len(stream) - 1 - T) // T // batch
        if self.per_epoch < 1:
            raise SystemExit("corpus too small for one batch of %d x %d tokens" % (batch, T))
        self.epoch, self.queue = 0, []
        self.ar = torch.arange(T + 1, device=device)

    def next(self):
        if not self.queue:
            shift = int(self.rng.integers(0, self.T))
            starts = shift + self.T * np.arange(self.per_epoch * self.batch)
            self.rng.shuffle(starts)
            self.queue = [starts[i * self.batch:(i + 1) * self.batch] for i in range(self.per_epoch)]
            self.epoch += 1
        s = torch.as_tensor(self.queue.pop(0), device=self.device)
        xy = self.stream[s[:, None] + self.ar[None, :]].long()
        return xy[:, :-1], xy[:, 1:]


def make_optimizer(model, lr, wd, cuda):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8)
    if cuda:
        try:
            return torch.optim.AdamW(groups, fused=True, **kw), "fused"
        except (TypeError, RuntimeError):
            pass
    return torch.optim.AdamW(groups, **kw), "plain"


def autocast(device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def lr_at(step, total, warmup, lr_max, lr_min):
    if step < warmup:
        return lr_max * (step + 1) / warmup
    prog = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * prog))


def evaluate(model, stream, T, batch, device, max_windows=None):
    """Mean next-token loss over non-overlapping windows of T+1 tokens, each
    read cold from position 0."""
    model.eval()
    nwin = (len(stream) - 1) // T
    if max_windows:
        nwin = min(nwin, max_windows)
    tot, cnt = 0.0, 0
    ar = torch.arange(T + 1, device=device)
    with torch.no_grad():
        for i in range(0, nwin, batch):
            s = torch.arange(i, min(nwin, i + batch), device=device) * T
            xy = stream[s[:, None] + ar[None, :]].long()
            with autocast(device):
                logits = model(xy[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   xy[:, 1:].reshape(-1), reduction="sum")
            tot += float(loss)
            cnt += xy[:, 1:].numel()
    model.train()
    return tot / max(1, cnt), cnt


def greedy(model, ids, steps, device):
    model.eval()
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([seq], device=device))
            seq.append(int(torch.argmax(logits[0, -1].float())))
    return seq[len(ids):]


def pack(tmp, mdir, out):
    """Everything of the model directory except the weights, as one tarball."""
    with tarfile.open(os.path.join(out, "asa-tiny-files.tar.gz"), "w:gz") as tf:
        for root, _, fns in os.walk(mdir):
            for fn in sorted(fns):
                if not fn.endswith(".safetensors"):
                    full = os.path.join(root, fn)
                    tf.add(full, arcname=os.path.relpath(full, tmp))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    global LOGF
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="folder with train.txt.xz, valid.txt.xz, manifest.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--time-budget", type=float, default=500, help="seconds for the whole run")
    ap.add_argument("--reserve", type=float, default=45,
                    help="seconds kept for final evaluation, samples and export")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=10, help="cap on passes over the training tokens")
    ap.add_argument("--max-steps", type=int, default=0, help="cap on steps (0: none)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--lr-min-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--evals", type=int, default=20, help="held-out evaluations during training")
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--eval-max-windows", type=int, default=0, help="0: the whole held-out set")
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--byte-tokenizer", action="store_true",
                    help="dry runs without tokenizers: byte-level, no merges")
    ap.add_argument("--corpus-fraction", type=float, default=1.0,
                    help="use only the first fraction of the training documents (dry runs)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (torch >= 2)")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    LOGF = open(os.path.join(a.out, "train.log"), "w", encoding="utf-8")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if cuda:
        try:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        except Exception as e:  # noqa: BLE001 (newer torch: other knobs; not essential)
            log("tf32 not enabled: %s" % e)
    log("torch %s on %s%s; args %s" % (torch.__version__, device,
                                       " (%s)" % torch.cuda.get_device_name(0) if cuda else "", vars(a)))
    deadline = T0 + a.time_budget

    # ---- corpus and tokenizer
    train_docs = read_docs(os.path.join(a.corpus, "train.txt.xz"))
    valid_docs = read_docs(os.path.join(a.corpus, "valid.txt.xz"))
    with open(os.path.join(a.corpus, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    if a.corpus_fraction < 1.0:
        train_docs = train_docs[:max(1, int(len(train_docs) * a.corpus_fraction))]
        valid_docs = valid_docs[:max(1, int(len(valid_docs) * a.corpus_fraction))]
    log("corpus: %d train documents (%d chars), %d valid documents (%d chars)" % (
        len(train_docs), sum(map(len, train_docs)), len(valid_docs), sum(map(len, valid_docs))))
    tcls = ByteTokenizer if a.byte_tokenizer else HFTokenizer
    tok = tcls(train_docs, a.vocab)
    log("tokenizer: %s, vocab %d, bos %d, eos %d" % (tok.kind, tok.vocab_size, tok.bos, tok.eos))
    train_stream = make_stream(tok.encode_docs(train_docs), tok.bos, tok.eos)
    valid_stream = make_stream(tok.encode_docs(valid_docs), tok.bos, tok.eos)
    chars_per_token = sum(map(len, train_docs)) / len(train_stream)
    log("tokens: train %d, valid %d (%.2f chars/token)" % (len(train_stream), len(valid_stream),
                                                           chars_per_token))
    train_t = torch.as_tensor(train_stream, device=device)
    valid_t = torch.as_tensor(valid_stream, device=device)

    # ---- models
    cfg = asa_torch.asa_tiny_config(tok.vocab_size, tok.bos, tok.eos, a.max_pos)
    torch.manual_seed(a.seed)
    models = {"asa": asa_torch.LM(cfg, "asa", a.dropout).to(device),
              "full": asa_torch.LM(cfg, "full", a.dropout).to(device)}
    nparams = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    log("parameters: asa %d, full-attention baseline %d" % (nparams["asa"], nparams["full"]))
    opts = {}
    for k, m in models.items():
        opts[k], kind = make_optimizer(m, a.lr, a.wd, cuda)
    log("optimizer AdamW (%s), lr %.2e -> %.2e, wd %.2f, dropout %.2f, batch %d x %d tokens" % (
        kind, a.lr, a.lr * a.lr_min_ratio, a.wd, a.dropout, a.batch, a.seq))
    fwd = dict(models)
    if a.compile:
        fwd = {k: torch.compile(m) for k, m in models.items()}

    batches = Batches(train_t, a.seq, a.batch, a.seed, device)
    cap = int(a.epochs * batches.per_epoch)
    if a.max_steps:
        cap = min(cap, a.max_steps)

    def train_step(step, total, warmup, x, y):
        lr = lr_at(step, total, warmup, a.lr, a.lr * a.lr_min_ratio)
        losses = {}
        for k in ("asa", "full"):
            for g in opts[k].param_groups:
                g["lr"] = lr
            with autocast(device):
                logits = fwd[k](x)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(models[k].parameters(), 1.0)
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            losses[k] = loss.detach()
        return losses, lr

    curve = []          # (step, tokens, asa, full) train loss, averaged over log_every
    evals = []          # (step, tokens, asa, full) held-out loss
    best = {k: (float("inf"), -1, None) for k in models}
    ev_max = a.eval_max_windows or None

    def run_eval(step):
        t = time.time()
        row = [step, step * a.batch * a.seq]
        for k in ("asa", "full"):
            loss, _ = evaluate(fwd[k], valid_t, a.seq, a.eval_batch, device, ev_max)
            row.append(loss)
            if loss < best[k][0]:
                best[k] = (loss, step, {n: p.detach().to("cpu", copy=True)
                                        for n, p in models[k].state_dict().items()})
        evals.append(row)
        log("eval step %d: held-out loss asa %.4f (ppl %.2f)  full %.4f (ppl %.2f)  [%.1fs]" % (
            step, row[2], math.exp(row[2]), row[3], math.exp(row[3]), time.time() - t))
        return time.time() - t

    t_eval = run_eval(0)

    # ---- training; after `probe` timed steps the step count is fixed
    probe = min(10, cap)
    total, warmup = cap, min(a.warmup, max(1, cap // 10))
    eval_every = max(1, total // max(1, a.evals))
    acc = {"asa": 0.0, "full": 0.0}
    nacc = 0
    log_every = 50
    step = 0
    t_probe = t_step = None
    stopped_early = False
    train_deadline = deadline - a.reserve
    t_train = time.time()
    while step < total:
        if step == 2:
            sync(device)
            t_probe = time.time()
        if step == probe and t_step is None:
            sync(device)
            t_step = (time.time() - t_probe) / max(1, probe - 2)
            left = train_deadline - time.time() - a.evals * t_eval
            fit = step + max(0, int(0.93 * left / t_step))
            total = max(step, min(cap, fit))
            warmup = min(a.warmup, max(1, total // 10))
            eval_every = max(1, total // max(1, a.evals))
            log("plan: %.1f ms per step (both models), %d steps per epoch, cap %d, time allows %d -> "
                "%d steps (%.2f epochs), warmup %d, eval every %d" % (
                    1000 * t_step, batches.per_epoch, cap, fit, total, total / batches.per_epoch,
                    warmup, eval_every))
            if step >= total:
                break
        if time.time() > train_deadline:
            stopped_early = True
            log("time budget reached at step %d of %d: stopping" % (step, total))
            break
        x, y = batches.next()
        losses, lr = train_step(step, total, warmup, x, y)
        step += 1
        if step % 10 == 0 or step == total:
            for k in acc:
                acc[k] += float(losses[k])
            nacc += 1
        if step % log_every == 0 or step == total:
            curve.append([step, step * a.batch * a.seq, acc["asa"] / max(1, nacc), acc["full"] / max(1, nacc)])
            if step % (log_every * 4) == 0 or step == total:
                log("step %5d/%d lr %.2e train loss asa %.4f full %.4f  (%.0f tok/s per model)" % (
                    step, total, lr, curve[-1][2], curve[-1][3],
                    step * a.batch * a.seq / max(1e-9, time.time() - t_train)))
            acc = {"asa": 0.0, "full": 0.0}
            nacc = 0
        if step % eval_every == 0 and step != total:
            run_eval(step)
    if t_step is None:
        sync(device)
        t_step = (time.time() - t_train) / max(1, step)
    if not evals or evals[-1][0] != step:
        run_eval(step)
    final = {"asa": evals[-1][2], "full": evals[-1][3]}
    train_time = time.time() - t_train

    # ---- the shipped ASA model: the best held-out checkpoint (early stopping)
    for k, m in models.items():
        m.load_state_dict(best[k][2])
    log("best held-out loss: asa %.4f at step %d, full %.4f at step %d" % (
        best["asa"][0], best["asa"][1], best["full"][0], best["full"][1]))

    tmp = tempfile.mkdtemp(prefix="asa-tiny-")
    mdir = os.path.join(tmp, "asa-tiny")
    files = export.export_model(models["asa"], cfg, mdir, dtype="BF16", max_shard_bytes=12 << 20)
    tok.save(os.path.join(mdir, "tokenizer.json"))
    # the weights leave first, so that a failure below loses no training
    for fn in files:
        if fn.endswith(".safetensors"):
            shutil.copy(os.path.join(mdir, fn), os.path.join(a.out, fn))
    with open(os.path.join(mdir, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token_id": tok.bos, "eos_token_id": tok.eos, "do_sample": False,
                   "max_new_tokens": 128}, f, indent=2)
        f.write("\n")
    pack(tmp, mdir, a.out)      # early copy; replaced with the complete one at the end
    # the exported bf16 weights, read back, are what the card reports on
    shipped = asa_torch.LM(cfg, "asa").to(device)
    shipped.load_spec_state({k: v.to(device) for k, v in export.load_model_dir(mdir).items()})
    shipped_loss, nval = evaluate(shipped, valid_t, a.seq, a.eval_batch, device, ev_max)
    with torch.no_grad():       # the baseline is judged on bf16-rounded weights too
        for p_ in models["full"].parameters():
            p_.copy_(p_.to(torch.bfloat16).to(p_.dtype))
    full_best_loss, _ = evaluate(models["full"], valid_t, a.seq, a.eval_batch, device, ev_max)
    log("held-out loss with bf16 weights: shipped ASA %.4f (ppl %.2f) over %d tokens; baseline %.4f (ppl %.2f)" % (
        shipped_loss, math.exp(shipped_loss), nval, full_best_loss, math.exp(full_best_loss)))
    long_ctx = {}
    if len(valid_stream) > 8 * 2 * a.seq:
        try:
            for k, m in (("asa", shipped), ("full", models["full"])):
                long_ctx[k] = evaluate(m, valid_t, 2 * a.seq, max(1, a.eval_batch // 2), device,
                                       ev_max and max(1, ev_max // 2))[0]
            log("held-out loss at context %d (twice the training context): asa %.4f full %.4f" % (
                2 * a.seq, long_ctx["asa"], long_ctx["full"]))
        except Exception:  # noqa: BLE001 (an extra; the run goes on)
            long_ctx = {}
            log("long-context evaluation failed:\n" + traceback.format_exc())

    samples = []
    try:
        for p in PROMPTS:
            ids = tok.encode(p)
            cont = greedy(shipped.float(), ids, a.gen_tokens, device)
            samples.append({"prompt": p, "prompt_ids": ids, "greedy_ids": cont,
                            "greedy_text": tok.decode(cont)})
            log("sample: %r -> %r" % (p, samples[-1]["greedy_text"]))
    except Exception:  # noqa: BLE001 (samples can be made later from the exported model)
        log("samples failed:\n" + traceback.format_exc())
    vtext = "\n\n".join(valid_docs)[:20000]
    tcheck = [{"text": t, "ids": tok.encode(t)} for t in [vtext] + TOKENIZER_CHECK_EXTRA]

    metrics = {
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "bos_token_id": tok.bos,
                      "eos_token_id": tok.eos},
        "corpus": {"train_documents": len(train_docs), "valid_documents": len(valid_docs),
                   "train_characters": sum(map(len, train_docs)),
                   "valid_characters": sum(map(len, valid_docs)),
                   "train_tokens": int(len(train_stream)), "valid_tokens": int(len(valid_stream)),
                   "chars_per_token": chars_per_token, "sources": manifest.get("sources", []),
                   "per_source": {k: manifest["splits"][k]["per_source"] for k in ("train", "valid")}},
        "training": {"steps": step, "planned_steps": total, "stopped_early": stopped_early,
                     "epochs": step / batches.per_epoch, "tokens_seen": step * a.batch * a.seq,
                     "batch": a.batch, "seq": a.seq, "lr": a.lr, "lr_min": a.lr * a.lr_min_ratio,
                     "warmup": warmup, "weight_decay": a.wd, "dropout": a.dropout,
                     "ms_per_step_both": 1000 * t_step, "train_seconds": train_time,
                     "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                     "torch": torch.__version__, "seed": a.seed},
        "parameters": nparams,
        "final_train_loss": {"asa": curve[-1][2] if curve else None,
                             "full": curve[-1][3] if curve else None},
        "valid": {
            "tokens": nval,
            "final_step": {"asa": final["asa"], "full": final["full"]},
            "best": {"asa": best["asa"][0], "full": best["full"][0]},
            "best_step": {"asa": best["asa"][1], "full": best["full"][1]},
            "shipped_bf16": {"asa": shipped_loss, "full": full_best_loss},
            "long_context": {"seq": 2 * a.seq, **long_ctx} if long_ctx else None,
        },
        "curve": {"train": curve, "valid": evals},
        "samples": samples,
        "export_files": files,
        "elapsed_seconds": None,
    }
    v = metrics["valid"]["shipped_bf16"]
    metrics["summary"] = {"asa_loss": v["asa"], "asa_ppl": math.exp(v["asa"]),
                          "full_loss": v["full"], "full_ppl": math.exp(v["full"]),
                          "ppl_ratio_asa_over_full": math.exp(v["asa"] - v["full"])}

    tdir = os.path.join(mdir, "training")
    os.makedirs(tdir)
    with open(os.path.join(tdir, "tokenizer_check.json"), "w", encoding="utf-8") as f:
        json.dump(tcheck, f, ensure_ascii=False)
    try:
        log("plot: %s" % plot_loss.plot(metrics, os.path.join(mdir, "loss.png")))
    except Exception:  # noqa: BLE001 (the plot can be redrawn from metrics.json)
        log("plot failed:\n" + traceback.format_exc())
    with open(os.path.join(tdir, "loss.csv"), "w", encoding="utf-8") as f:
        f.write("kind,step,tokens,asa,full\n")
        for r in curve:
            f.write("train,%d,%d,%.5f,%.5f\n" % tuple(r))
        for r in evals:
            f.write("valid,%d,%d,%.5f,%.5f\n" % tuple(r))
    metrics["elapsed_seconds"] = time.time() - T0
    for path in (os.path.join(tdir, "metrics.json"), os.path.join(a.out, "metrics.json")):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1, ensure_ascii=False)
            f.write("\n")
    try:
        text = card.render(metrics, cfg)
        with open(os.path.join(mdir, "README.md"), "w", encoding="utf-8") as f:
            f.write(text)
    except Exception:  # noqa: BLE001 (card.py can render it again from metrics.json)
        log("model card failed:\n" + traceback.format_exc())

    # ---- hand-back: shards as files, everything else in one tarball
    log("summary:\n" + card.summary_table(metrics))
    LOGF.flush()
    shutil.copy(os.path.join(a.out, "train.log"), os.path.join(tdir, "train.log"))
    pack(tmp, mdir, a.out)
    shutil.rmtree(tmp)
    log("done in %.1fs; files in %s: %s" % (time.time() - T0, a.out, sorted(os.listdir(a.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
