"""Small models and training loops for the activation-compression tests (CPU, seconds)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

import lowbit.data


class Block(nn.Module):
    """A ResNet basic block (conv-BN-ReLU-conv-BN, identity shortcut, ReLU)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + x)


class TinyResNet(nn.Module):
    """ResNet-style CNN for 8×8 digits: stem, max pool, two basic blocks, dropout, linear."""

    def __init__(self, c: int = 16, classes: int = 10, p: float = 0.1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(Block(c), Block(c))
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(c * 16, classes)

    def forward(self, x):
        x = self.layer1(self.pool(self.stem(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        B, T, D = x.shape
        h = self.heads
        q, k, v = (f(x).view(B, T, h, D // h).transpose(1, 2) for f in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // h)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, D))


class TransformerBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A decoder-only character model: token + position embeddings, pre-LN blocks, head."""

    def __init__(self, vocab: int, block: int, d: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block, d)
        self.blocks = nn.Sequential(*(TransformerBlock(d, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def _context(model, bits, seed: int):
    import lowbit.act

    if bits is None:
        return contextlib.nullcontext()
    # An explicit per-step seed: the run does not depend on how many contexts came before.
    return lowbit.act.compress(model, bits=bits, seed=seed)


def train_digits(bits, *, seed: int = 0, epochs: int = 8, batch: int = 64) -> float:
    """Test accuracy of TinyResNet on digits after ``epochs`` (``bits=None``: uncompressed)."""
    torch.manual_seed(seed)
    data = lowbit.data.digits()
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    steps = 0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=g).split(batch):
            steps += 1
            with _context(model, bits, seed * 1_000_003 + steps):
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(data.x_test).argmax(1) == data.y_test).float().mean().item()


def train_text(bits, *, seed: int = 0, steps: int = 150, batch: int = 32,
               block: int = 32) -> float:
    """Next-character test accuracy of TinyGPT after ``steps`` (``bits=None``: uncompressed)."""
    torch.manual_seed(seed)
    data, vocab = lowbit.data.text(chars=120_000, block=block)
    model = TinyGPT(len(vocab), block)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    model.train()
    for i in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        with _context(model, bits, seed * 1_000_003 + i):
            logits = model(data.x_train[idx])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   data.y_train[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(data.x_test[:256]).argmax(-1)
        return (pred == data.y_test[:256]).float().mean().item()
