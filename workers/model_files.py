"""A base model's files: fetch them (a hub id into the model cache, an archive unpacked) and describe them.

``model_describe(path) -> ModelInfo`` reads ``config.json`` and the tokenizer (never the weights: the
parameters are counted on torch's ``meta`` device) and says what a user would otherwise type by hand.
``hub_fetch`` downloads a hub id, and fails at once when the workers have no network.
``archive_unpack`` unpacks a ``.tar.gz`` or ``.zip`` of a model directory, refusing any member that
would land outside it. Every failure raises ``ModelLoadError`` with a sentence a user can act on.
"""

import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from workers.hub import hub_offline
from workers.loading import ModelLoadError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
# Context length keys, most specific first (GPT-2 and friends call it n_positions).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class ModelInfo:
    """What a base model's files say about it.

    architecture: ``config.json``'s ``architectures[0]``, e.g. "Qwen2ForCausalLM".
    family: ``config.json``'s ``model_type``, e.g. "qwen2".
    parameters: number of parameters (tied weights counted once).
    context_length: longest input in tokens (``max_position_embeddings`` or its family's name for it).
    chat_template: the tokenizer's chat template; "" when it has none.
    dtype: the weights' dtype as saved ("bfloat16", "float32", ...); "" when the config does not say.
    size_bytes: size of the directory's files on disk.
    license: the model card's ``license:`` (or the first line of a LICENSE file); "" when absent.
    shape: what training memory depends on (``workers.estimate.Shape`` fields: hidden_size, layers,
        intermediate_size, vocab_size); {} when the config does not say.
    """

    architecture: str
    family: str
    parameters: int
    context_length: int
    chat_template: str
    dtype: str
    size_bytes: int
    license: str
    shape: dict = field(default_factory=dict)


def model_describe(path: str) -> ModelInfo:
    """Describe the model directory at ``path`` from its config and tokenizer; see ``ModelInfo``."""
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError(f"{path} is not a directory on the workers' storage")
    if not (root / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model directory: it has no config.json")
    from workers.vision.backbones import is_backbone

    if is_backbone(str(root)):
        return _backbone_describe(root)
    config = _config_load(root)
    architectures = getattr(config, "architectures", None) or []
    tokenizer = _tokenizer_load(root)
    return ModelInfo(
        architecture=architectures[0] if architectures else "",
        family=config.model_type,
        parameters=_parameters_count(config, path),
        context_length=_context_length(config, tokenizer),
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else "",
        dtype=_dtype(config),
        size_bytes=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        license=_license(root),
        shape=model_shape(config),
    )


def _backbone_describe(root: Path) -> ModelInfo:
    """A vision backbone (``workers.vision.backbones``): no tokenizer, no context; its image size as shape."""
    from workers.vision.backbones import BACKBONE_TYPE, BackboneError, backbone_config, backbone_parameters
    from workers.vision.classifier import CLASSIFIER_ARCHITECTURE, is_classifier

    try:
        config = backbone_config(str(root))
        parameters = backbone_parameters(str(root))
    except BackboneError as exc:
        raise ModelLoadError(str(exc)) from exc
    # recorded here, on the worker: the web process says whether the base classifies from the row alone
    architecture = CLASSIFIER_ARCHITECTURE if is_classifier(str(root)) else "VisionBackbone"
    return ModelInfo(architecture=architecture, family=BACKBONE_TYPE, parameters=parameters, context_length=0,
                     chat_template="", dtype="float32",
                     size_bytes=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
                     license=_license(root), shape={"image_size": int(config["image_size"])})


def model_shape(config) -> dict:
    """The sizes ``workers.estimate.memory_need`` reads from a transformers config; {} if one is missing."""
    text = getattr(config, "get_text_config", lambda: config)()
    values = {"hidden_size": getattr(text, "hidden_size", None), "layers": getattr(text, "num_hidden_layers", None),
              "intermediate_size": getattr(text, "intermediate_size", None),
              "vocab_size": getattr(text, "vocab_size", None)}
    return values if all(isinstance(v, int) and v > 0 for v in values.values()) else {}


def _config_load(root: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not read {root}/config.json: {(str(exc).splitlines() or [''])[0]}") from exc


def _tokenizer_load(root: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"could not load the tokenizer in {root}: {(str(exc).splitlines() or [''])[0]}") from exc


def _parameters_count(config, path: str) -> int:
    """Built on the meta device: shapes only, no memory, no weights read."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path} holds a {config.model_type!r} model, which is not a causal language model "
                             f"transformers can train: {(str(exc).splitlines() or [''])[0]}") from exc
    return sum(p.numel() for p in model.parameters())


def _context_length(config, tokenizer) -> int:
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 2048


def _dtype(config) -> str:
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(value).removeprefix("torch.") if value else ""


def _license(root: Path) -> str:
    readme = root / "README.md"
    if readme.is_file():
        head = readme.read_text(errors="replace")[:8192]
        if head.startswith("---"):
            match = re.search(r"^license:\s*(\S.*)$", head.split("\n---", 1)[0], re.MULTILINE)
            if match:
                return match.group(1).strip().strip("\"'")[:200]
    for candidate in sorted(root.glob("LICEN[CS]E*")):
        if candidate.is_file():
            lines = [line.strip() for line in candidate.read_text(errors="replace")[:4096].splitlines()]
            return next((line for line in lines if line), candidate.name)[:200]
    return ""


def hub_fetch(repo_id: str, *, revision: str = "", cache_dir: str | None = None, endpoint: str | None = None) -> str:
    """Download hub model ``repo_id`` (at ``revision``, default its main branch) into the model cache
    (``cache_dir``, default the hub's, HF_HOME) and return its local directory.

    With no network (``workers.hub.hub_offline``: HF_HUB_OFFLINE set, or no connection within
    seconds) it fails at once; a hub that answers and then fails, within the hub client's timeouts.
    """
    why = hub_offline(endpoint)
    if why:
        at = f" at {revision}" if revision else ""
        raise ModelLoadError(f"could not download {repo_id!r}{at} from the hub: {why}; copy the model to the workers' "
                             "shared storage and register its directory, or upload it as an archive")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir, endpoint=endpoint,
                                 etag_timeout=10)
    except Exception as exc:  # the hub client raises its own, httpx's and OSError for one failed connection
        raise ModelLoadError(f"could not download {repo_id!r}{f' at {revision}' if revision else ''} from the hub: "
                             f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from exc


def archive_unpack(archive: str, target: str) -> str:
    """Unpack the ``.tar.gz``/``.zip`` at ``archive`` into ``target`` (made anew) and return the model
    directory in it: ``target`` itself, or the one folder the archive holds.

    A member with an absolute path, a ``..`` step, or (in a tar) a link or device is refused before
    anything is written, so nothing lands outside ``target``.
    """
    name = Path(archive).name.lower()
    if not name.endswith(ARCHIVE_SUFFIXES):
        raise ModelLoadError(f"{Path(archive).name}: an archive must be a .tar.gz, .tgz or .zip of a model directory")
    destination = Path(target)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    try:
        if name.endswith(".zip"):
            _zip_unpack(archive, destination)
        else:
            _tar_unpack(archive, destination)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise ModelLoadError(f"could not unpack {Path(archive).name}: {exc}") from exc
    except ModelLoadError:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    entries = [p for p in destination.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if not (destination / "config.json").exists() and len(entries) == 1 and entries[0].is_dir():
        return str(entries[0])
    return str(destination)


def _member_check(archive: str, member: str) -> None:
    parts = Path(member).parts
    if not member or Path(member).is_absolute() or member.startswith(("/", "\\")) or ".." in parts \
            or re.match(r"^[A-Za-z]:", member):
        raise ModelLoadError(f"{Path(archive).name}: member {member!r} would be written outside the model "
                             "directory; archive the directory's contents with relative paths")


def _tar_unpack(archive: str, destination: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _member_check(archive, member.name)
            if not (member.isfile() or member.isdir()):
                raise ModelLoadError(f"{Path(archive).name}: member {member.name!r} is a link or special file; "
                                     "archive plain files only")
        tar.extractall(destination, members=members, filter="data")


def _zip_unpack(archive: str, destination: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            _member_check(archive, member)
        bundle.extractall(destination)

