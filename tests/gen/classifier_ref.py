#!/usr/bin/python3
"""Parity fixtures for the evaluation classifiers (src/models/convnet.c, resnet.c).

Reference modules written here in plain PyTorch (torchvision is not needed):
ConvNet-D as in the dataset-distillation benchmarks, ResNetAP-10 (BasicBlock with
average-pool downsampling) and torchvision's ResNet-18 layout. Each case stores, in
tests/ref/classifier_<case>.safetensors:
  <state_dict keys>        the weights (norm affines and running stats randomised)
  ref.x                    the input (N, C, H, W)
  ref.r                    the upstream gradient of the logits, loss = sum(logits * r)
  ref.logits               train-mode logits (batch statistics for BatchNorm)
  ref.grad.<key>           d loss / d weight for every trainable tensor
  ref.dx                   d loss / d x
  ref.after.<key>          BatchNorm running stats after that train-mode forward
  ref.eval_logits          eval-mode logits after it (running statistics)
Computed in float64, stored as float32. Run: /usr/bin/python3 tests/gen/classifier_ref.py
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import os, sys  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_writer import save_safetensors  # noqa: E402


def norm_layer(kind, c):
    if kind == "instance":
        return nn.GroupNorm(c, c, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(c)
    return None


class ConvNet(nn.Module):
    def __init__(self, channel, classes, width, depth, norm, size):
        super().__init__()
        layers, h = [], size
        for d in range(depth):
            pad = 3 if (channel == 1 and size == 28 and d == 0) else 1
            layers.append(nn.Conv2d(channel if d == 0 else width, width, 3, padding=pad))
            h = h + 2 * pad - 2
            n = norm_layer(norm, width)
            if n is not None:
                layers.append(n)
            layers.append(nn.ReLU(inplace=False))
            layers.append(nn.AvgPool2d(2, 2))
            h //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * h * h, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class BlockAP(nn.Module):
    def __init__(self, cin, planes, stride, norm):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, 1, bias=False),
                                          nn.AvgPool2d(2, 2), norm_layer(norm, planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.stride != 1:
            out = F.avg_pool2d(out, 2, 2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetAP10(nn.Module):
    def __init__(self, channel, classes, width, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(channel, width, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm, width)
        cin = width
        for s in range(4):
            planes = width << s
            setattr(self, "layer%d" % (s + 1), nn.Sequential(BlockAP(cin, planes, 1 if s == 0 else 2, norm)))
            cin = planes
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier(x.mean(dim=(2, 3)))


class BlockTV(nn.Module):
    def __init__(self, cin, planes, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), norm_layer(norm, planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(out + sc)


class ResNet18(nn.Module):
    def __init__(self, channel, classes, width, norm, large_stem):
        super().__init__()
        self.large = large_stem
        if large_stem:
            self.conv1 = nn.Conv2d(channel, width, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(channel, width, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm, width)
        cin = width
        for s in range(4):
            planes = width << s
            blocks = [BlockTV(cin, planes, 1 if s == 0 else 2, norm), BlockTV(planes, planes, 1, norm)]
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
            cin = planes
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.large:
            x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def make_case(name, model, n, c, size, seed):
    torch.manual_seed(seed)
    model = model.double()
    with torch.no_grad():  # randomise norm affines and running stats so every path is tested
        for mod in model.modules():
            if isinstance(mod, (nn.GroupNorm, nn.BatchNorm2d)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    x = torch.randn(n, c, size, size, dtype=torch.float64, requires_grad=True)
    model.train()
    logits = model(x)
    r = torch.randn_like(logits)
    (logits * r).sum().backward()
    out = {k: v.numpy() for k, v in sd.items()}
    out["ref.x"] = x.detach().numpy()
    out["ref.r"] = r.numpy()
    out["ref.logits"] = logits.detach().numpy()
    out["ref.dx"] = x.grad.numpy()
    for k, p in model.named_parameters():
        out["ref.grad." + k] = p.grad.numpy()
    for k, v in model.state_dict().items():
        if "running" in k:
            out["ref.after." + k] = v.numpy()
    model.eval()
    with torch.no_grad():
        out["ref.eval_logits"] = model(x.detach()).numpy()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref", "classifier_%s.safetensors" % name)
    save_safetensors(path, out)
    print("%-22s %7d bytes, logits %s" % (name, os.path.getsize(path), tuple(logits.shape)))


def main():
    torch.set_num_threads(1)
    torch.manual_seed(1234)  # the models below draw their initial weights from this stream
    cases = [
        ("convnet3_in_28", ConvNet(1, 10, 8, 3, "instance", 28), 2, 1, 28),
        ("convnet3_in_32", ConvNet(3, 10, 8, 3, "instance", 32), 2, 3, 32),
        ("convnet3_bn_28", ConvNet(1, 10, 8, 3, "batch", 28), 3, 1, 28),
        ("convnet3_nn_32", ConvNet(3, 10, 8, 3, "none", 32), 2, 3, 32),
        ("resnetap10_in_28", ResNetAP10(1, 10, 4, "instance"), 2, 1, 28),
        ("resnetap10_in_32", ResNetAP10(3, 10, 4, "instance"), 2, 3, 32),
        ("resnetap10_bn_32", ResNetAP10(3, 10, 4, "batch"), 3, 3, 32),
        ("resnet18_bn_28", ResNet18(1, 10, 4, "batch", False), 3, 1, 28),
        ("resnet18_bn_32", ResNet18(3, 10, 4, "batch", False), 2, 3, 32),
        ("resnet18_in_32", ResNet18(3, 10, 4, "instance", False), 2, 3, 32),
        ("resnet18_bn_large_64", ResNet18(3, 10, 4, "batch", True), 2, 3, 64),
    ]
    for i, (name, model, n, c, size) in enumerate(cases):
        make_case(name, model, n, c, size, 1234 + i)


if __name__ == "__main__":
    sys.exit(main())
