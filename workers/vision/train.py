"""The one training loop of every strategy: epochs over the images with the chosen optimizer, a cosine
learning rate, augmentation, a validation pass per epoch (loss and accuracy reported as a ``Metric``),
early stopping that keeps the best epoch's weights, and ``should_stop`` asked after every step.

Checkpoints: at the end of each epoch (or every ``save_steps`` steps) and when ``should_stop`` asks for
one, ``checkpoint-<step>`` holds the classifier as it is (``vision.json``, ``model.safetensors``: it loads
as a classifier) and what the loop needs to go on from that very step: the optimizer, the schedule, the
random states, where the epoch is and the early-stopping state with the best epoch's weights. A run
given ``resume_from`` continues from there and trains no step twice."""

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workers.config import Stop
from workers.events import ArtifactSaved, Emit, LogLine, Metric, Progress

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
    values: dict = field(default_factory=dict)  # the last epoch's metrics


@dataclass
class Loop:
    """Where the loop stands: the epoch under way (from 1), where its next batch starts in its order of
    the training images, the loss and hits summed over its batches so far, and the early-stopping state
    (best validation loss, epochs waited since, whether it stopped early)."""

    epoch: int = 1
    position: int = 0
    order: list = field(default_factory=list)
    loss_sum: float = 0.0
    correct: float = 0.0
    best: float | None = None
    waited: int = 0
    early_stopped: bool = False


# A checkpoint's files besides the classifier's (names the platform leaves out when only the weights
# are wanted: jobs_app.services.running.TRAINING_STATE).
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pth"
BEST_FILE = "early_stopping.safetensors"
CHECKPOINT_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}


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


def fit(model, images: Images, config, emit: Emit, should_stop, *, frozen_epochs: int = 0,
        meta: dict | None = None) -> Fit:
    """Train ``model`` in place; it ends with the weights of the epoch of the best validation loss (the
    training loss when nothing is held out). ``frozen_epochs``: the first epochs train the head only.
    ``meta``: the classifier's ``vision.json``, written into each checkpoint. ``config.resume_from``: a
    checkpoint directory to continue from. ``Stop.CHECKPOINT`` from ``should_stop`` ends the run after a
    checkpoint of that step; any other stop ends it with nothing saved."""
    fitting = Fitting(model, images, config, emit, frozen_epochs=frozen_epochs, meta=meta or {})
    if config.resume_from:
        fitting.restore(config.resume_from)
    started = time.monotonic()
    while fitting.loop.epoch <= config.n_epochs and not fitting.loop.early_stopped:
        stop = fitting.epoch_train(should_stop)
        if stop:
            if stop == Stop.CHECKPOINT:
                fitting.checkpoint()
            fitting.result.stop = str(stop)
            fitting.result.wall_seconds = time.monotonic() - started
            return fitting.result
        fitting.epoch_end()
    loop, result = fitting.loop, fitting.result
    if fitting.best_state is not None:
        model.load_state_dict(fitting.best_state)
    if loop.early_stopped:
        emit(LogLine(f"Early stopping after epoch {result.epochs}: no better validation loss for {loop.waited} "
                     f"epochs; keeping epoch {result.best_epoch}"))
    result.wall_seconds = time.monotonic() - started
    return result


class Fitting:
    """One fit under way: the model, its optimizer, schedule and random generator, where the loop stands
    and the best epoch's weights; written to a checkpoint and read back from one."""

    def __init__(self, model, images: Images, config, emit: Emit, *, frozen_epochs: int, meta: dict) -> None:
        import torch

        self.model, self.images, self.config, self.emit = model, images, config, emit
        self.frozen_epochs, self.meta = frozen_epochs, meta
        self.device = next(model.parameters()).device
        self.generator = torch.Generator().manual_seed(config.seed)
        self.count = len(images.train_x)
        self.result = Fit(total_steps=math.ceil(self.count / config.batch_size) * config.n_epochs)
        total = self.result.total_steps
        self.optimizer = optimizer_make(config, model.parameters())
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
        self.loop = Loop()
        self.best_state: dict | None = None

    def _mode_set(self) -> None:
        """Training mode; the backbone frozen (its weights and batch statistics) during ``frozen_epochs``."""
        epoch, frozen = self.loop.epoch, self.loop.epoch <= self.frozen_epochs
        self.model.train()
        if not self.frozen_epochs:
            return
        self.model.features.requires_grad_(not frozen)
        if frozen:
            self.model.features.eval()  # its batch statistics stay the backbone's
        if self.loop.position == 0 and epoch in (1, self.frozen_epochs + 1):
            self.emit(LogLine(f"Epoch {epoch}: " + ("the backbone is frozen; the new classifier trains" if frozen
                                                    else "the backbone is unfrozen; every layer trains")))

    def epoch_train(self, should_stop) -> str:
        """Train the rest of the current epoch; what ``should_stop`` asked for, or "" at its end."""
        import torch
        import torch.nn.functional as F

        loop, config, result = self.loop, self.config, self.result
        self._mode_set()
        if not loop.order:
            loop.order = torch.randperm(self.count, generator=self.generator).tolist()
        order = torch.tensor(loop.order)
        while loop.position < self.count:
            index = order[loop.position : loop.position + config.batch_size]
            # augmented on the CPU (the generator's device), then moved to the model's
            batch = augment(normalise(self.images.train_x[index]), config.augmentation, self.generator).to(self.device)
            targets = self.images.train_y[index].to(self.device)
            logits = self.model(batch)
            loss = F.cross_entropy(logits, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            result.steps += 1
            loop.position += len(index)
            loop.loss_sum += loss.item() * len(index)
            loop.correct += (logits.argmax(dim=1) == targets).sum().item()
            self.emit(Progress(step=result.steps, total_steps=result.total_steps))
            stop = should_stop()
            if stop:
                return stop
            if config.save_steps and result.steps % config.save_steps == 0:
                self.checkpoint()
        return ""

    def epoch_end(self) -> None:
        """The epoch's metrics and validation pass, early stopping, then the next epoch (and a checkpoint
        when they are made per epoch)."""
        import torch.nn.functional as F

        loop, result = self.loop, self.result
        values = {
            "epoch": loop.epoch,
            "loss": loop.loss_sum / self.count,
            "train_accuracy": loop.correct / self.count,
            "learning_rate": self.schedule.get_last_lr()[0],
        }
        if len(self.images.valid_x):
            logits, guessed = predictions(self.model, self.images.valid_x)
            values["eval_loss"] = F.cross_entropy(logits, self.images.valid_y).item()
            values["valid_accuracy"] = (guessed == self.images.valid_y).float().mean().item()
        self.emit(Metric(step=result.steps, total_steps=result.total_steps, values=values))
        result.epochs, result.values = loop.epoch, values
        watched = values.get("eval_loss", values["loss"])
        if loop.best is None or watched < loop.best - 1e-6:
            loop.best, loop.waited, self.best_state = watched, 0, copy.deepcopy(self.model.state_dict())
            result.best_epoch, result.train_loss = loop.epoch, values["loss"]
            result.valid_loss, result.valid_accuracy = values.get("eval_loss", 0.0), values.get("valid_accuracy", 0.0)
        else:
            loop.waited += 1
            patience = self.config.early_stopping_patience
            loop.early_stopped = bool(patience and loop.waited >= patience)
        loop.epoch, loop.position, loop.order, loop.loss_sum, loop.correct = loop.epoch + 1, 0, [], 0.0, 0.0
        if not self.config.save_steps:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write ``checkpoint-<step>`` (what ``restore`` reads) under ``output_dir`` and announce it."""
        import torch
        from safetensors.torch import save_file

        from workers.vision.classifier import classifier_save

        if not self.config.output_dir:
            return
        path = Path(self.config.output_dir) / "checkpoints" / f"checkpoint-{self.result.steps}"
        classifier_save(self.model, str(path), meta=self.meta)
        torch.save(self.optimizer.state_dict(), path / OPTIMIZER_FILE)
        torch.save(self.schedule.state_dict(), path / SCHEDULER_FILE)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        torch.save({"generator": self.generator.get_state(), "torch": torch.get_rng_state(), "cuda": cuda},
                   path / RNG_FILE)
        if self.best_state is not None:
            save_file({name: tensor.contiguous() for name, tensor in self.best_state.items()}, str(path / BEST_FILE))
        state = {"loop": asdict(self.loop), "fit": asdict(self.result)}
        (path / STATE_FILE).write_text(json.dumps(state))
        # the last epoch's values under OpenAI's checkpoint names (train_loss, valid_loss), as text jobs report
        metrics = {CHECKPOINT_NAMES.get(name, name): value for name, value in self.result.values.items()
                   if name != "learning_rate"}
        self.emit(ArtifactSaved(kind="checkpoint", path=str(path), step=self.result.steps, metrics=metrics))

    def restore(self, directory: str) -> None:
        """Continue from the checkpoint in ``directory``: the weights, optimizer, schedule, random states,
        the place in the epoch and the early-stopping state, as they were at its step."""
        import torch
        from safetensors.torch import load_file

        from workers.vision.classifier import MODEL_FILE

        path = Path(directory)
        state = json.loads((path / STATE_FILE).read_text())
        self.model.load_state_dict(load_file(str(path / MODEL_FILE), device=str(self.device)))
        self.optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location=self.device, weights_only=True))
        self.schedule.load_state_dict(torch.load(path / SCHEDULER_FILE, weights_only=True))
        random = torch.load(path / RNG_FILE, weights_only=True)
        self.generator.set_state(random["generator"])
        torch.set_rng_state(random["torch"])
        if random["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(random["cuda"])
        if (path / BEST_FILE).is_file():
            self.best_state = load_file(str(path / BEST_FILE), device=str(self.device))
        self.loop = Loop(**state["loop"])
        self.result = Fit(**{**state["fit"], "total_steps": self.result.total_steps, "stop": "", "wall_seconds": 0.0})
        where = f"epoch {self.loop.epoch}" + (f", image {self.loop.position} of {self.count}" if self.loop.position
                                              else "")
        self.emit(LogLine(f"Resuming at step {self.result.steps} of {self.result.total_steps} ({where}) from "
                          f"{path.name}: weights, optimizer, schedule, random state and early stopping restored"))
