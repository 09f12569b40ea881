"""plm: continue pretraining, fine-tune and use a BERT-style model on your own data.

The package is split into a light CLI layer (``cli``, ``options``, ``config``, ``console``,
``commands``: standard library and typer only) and an engine (``data``, ``modeling``,
``training``, ``inference``, ``metrics``, ``reporting``) that imports torch and Hugging Face.
"""

__version__ = "0.1.0"
