"""The training engine: plain Python over torch/transformers/peft/trl.

Nothing here imports Django. Entry points take a frozen config and an ``emit``
callable that receives small event dataclasses (see ``workers.events``).
"""
