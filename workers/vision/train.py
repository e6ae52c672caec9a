"""The one training loop of every strategy: epochs over the images with the chosen optimizer, a cosine
learning rate, augmentation, a validation pass per epoch (loss and accuracy reported as a ``Metric``),
early stopping that keeps the best epoch's weights, and ``should_stop`` asked after every step."""

import copy
import math
import time
from dataclasses import dataclass

from workers.events import Emit, LogLine, Metric, Progress

MEAN, SPREAD = 0.5, 0.25  # pixels in 0..1 become roughly -2..2


@dataclass
class Images:
    """Loaded images: uint8 pixels (N × 3 × S × S) and class indexes, train and validation."""

    train_x: object
    train_y: object
    valid_x: object
    valid_y: object
    classes: list


@dataclass
class Fit:
    epochs: int = 0
    best_epoch: int = 0
    train_loss: float = 0.0
    valid_loss: float = 0.0
    valid_accuracy: float = 0.0
    steps: int = 0
    total_steps: int = 0
    wall_seconds: float = 0.0
    stop: str = ""


def normalise(pixels):
    """uint8 pixels → the network's input."""
    return (pixels.float() / 255 - MEAN) / SPREAD


def augment(batch, kind: str, generator):
    """Random flips (``flip``), and shifts with brightness/contrast jitter (``standard``), per image."""
    import torch

    if kind == "none":
        return batch
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    if kind == "standard":
        side = batch.shape[-1]
        limit = max(1, side // 8)
        shifts = torch.randint(-limit, limit + 1, (batch.shape[0], 2), generator=generator)
        batch = torch.stack(
            [image.roll((int(dy), int(dx)), dims=(1, 2)) for image, (dy, dx) in zip(batch, shifts, strict=True)]
        )
        scale = 1 + 0.4 * (torch.rand(batch.shape[0], 1, 1, 1, generator=generator) - 0.5)
        offset = 0.4 * (torch.rand(batch.shape[0], 1, 1, 1, generator=generator) - 0.5)
        batch = batch * scale + offset
    return batch


def optimizer_make(config, parameters):
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def predictions(model, pixels, batch_size: int = 256):
    """(logits, predicted class) of ``pixels`` with the model in eval mode, on the CPU."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    if not len(pixels):
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        logits = torch.cat(
            [model(normalise(pixels[i : i + batch_size]).to(device)).cpu() for i in range(0, len(pixels), batch_size)]
        )
    return logits, logits.argmax(dim=1)


def fit(model, images: Images, config, emit: Emit, should_stop, *, frozen_epochs: int = 0) -> Fit:
    """Train ``model`` in place; it ends with the weights of the epoch of the best validation loss (the
    training loss when nothing is held out). ``frozen_epochs``: the first epochs train the head only."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    count = len(images.train_x)
    per_epoch = math.ceil(count / config.batch_size)
    result = Fit(total_steps=per_epoch * config.n_epochs)
    optimizer = optimizer_make(config, model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, result.total_steps) / result.total_steps))
    )
    best, best_state, waited = math.inf, None, 0
    started = time.monotonic()
    for epoch in range(1, config.n_epochs + 1):
        frozen = epoch <= frozen_epochs
        if frozen_epochs and epoch in (1, frozen_epochs + 1):
            model.features.requires_grad_(not frozen)
            emit(
                LogLine(
                    f"Epoch {epoch}: "
                    + (
                        "the backbone is frozen; the new classifier trains"
                        if frozen
                        else "the backbone is unfrozen; every layer trains"
                    )
                )
            )
        model.train()
        if frozen:
            model.features.eval()  # its batch statistics stay the backbone's
        order = torch.randperm(count, generator=generator)
        loss_sum = correct = 0.0
        for start in range(0, count, config.batch_size):
            index = order[start : start + config.batch_size]
            # augmented on the CPU (the generator's device), then moved to the model's
            batch = augment(normalise(images.train_x[index]), config.augmentation, generator).to(device)
            targets = images.train_y[index].to(device)
            logits = model(batch)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            result.steps += 1
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(dim=1) == targets).sum().item()
            emit(Progress(step=result.steps, total_steps=result.total_steps))
            stop = should_stop()
            if stop:
                result.stop, result.wall_seconds = str(stop), time.monotonic() - started
                return result
        values = {
            "epoch": epoch,
            "loss": loss_sum / count,
            "train_accuracy": correct / count,
            "learning_rate": schedule.get_last_lr()[0],
        }
        if len(images.valid_x):
            logits, guessed = predictions(model, images.valid_x)
            values["eval_loss"] = F.cross_entropy(logits, images.valid_y).item()
            values["valid_accuracy"] = (guessed == images.valid_y).float().mean().item()
        emit(Metric(step=result.steps, total_steps=result.total_steps, values=values))
        result.epochs = epoch
        watched = values.get("eval_loss", values["loss"])
        if watched < best - 1e-6:
            best, waited, best_state = watched, 0, copy.deepcopy(model.state_dict())
            result.best_epoch, result.train_loss = epoch, values["loss"]
            result.valid_loss, result.valid_accuracy = values.get("eval_loss", 0.0), values.get("valid_accuracy", 0.0)
        else:
            waited += 1
            if config.early_stopping_patience and waited >= config.early_stopping_patience:
                emit(
                    LogLine(
                        f"Early stopping after epoch {epoch}: no better validation loss for {waited} epochs; "
                        f"keeping epoch {result.best_epoch}"
                    )
                )
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.wall_seconds = time.monotonic() - started
    return result
