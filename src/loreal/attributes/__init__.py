"""Resolution-robust attribute banks: their format (``bank``), the LLM miner (``miner``, with its
prompt texts in ``prompts``) and the ``loreal attributes`` command (``cli``).

The miner and the CLI import ``openai`` only when a request is made, so loading a bank costs
nothing beyond the standard library.
"""
from .bank import FORMAT, AttributeBank, load_bank, read_bank, shipped_banks, write_bank
from .miner import MiningError, mine_attributes

__all__ = ["FORMAT", "AttributeBank", "MiningError", "load_bank", "mine_attributes", "read_bank",
           "shipped_banks", "write_bank"]
